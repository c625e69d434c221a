CREATE TABLE messages (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL CHECK (seq >= 1),
    sender_id       BIGINT NOT NULL REFERENCES users (id),
    client_msg_id   UUID   NOT NULL,
    body            TEXT   NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- History pages and sync walk this index.
    CONSTRAINT messages_conversation_seq UNIQUE (conversation_id, seq),
    -- A retried send (same sender, same client_msg_id) is recognised, never stored twice.
    CONSTRAINT messages_sender_client_msg_id UNIQUE (sender_id, client_msg_id)
);

CREATE TYPE conversation_kind AS ENUM ('direct', 'group');

-- last_seq is the last message seq handed out in this conversation; bumping it in the
-- same transaction that inserts the message keeps seqs gapless and strictly increasing.
CREATE TABLE conversations (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         conversation_kind NOT NULL,
    title        TEXT,
    created_by   BIGINT NOT NULL REFERENCES users (id),
    last_seq     BIGINT NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    -- For direct chats only: the two members, smaller id first, so a pair has one direct chat.
    direct_low   BIGINT REFERENCES users (id),
    direct_high  BIGINT REFERENCES users (id),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((kind = 'direct') = (direct_low IS NOT NULL AND direct_high IS NOT NULL)),
    CHECK (direct_low < direct_high),
    UNIQUE (direct_low, direct_high)
);

CREATE TABLE conversation_members (
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_read_seq   BIGINT NOT NULL DEFAULT 0 CHECK (last_read_seq >= 0),
    joined_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
-- A user's conversations.
CREATE INDEX conversation_members_user ON conversation_members (user_id, conversation_id);

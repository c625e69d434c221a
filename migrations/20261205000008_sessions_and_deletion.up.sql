-- Sessions: one per login, held by a refresh token of which only a hash is stored. Refreshing
-- rotates the token; a superseded token shown again ends the session (it was copied). Access
-- tokens name their session (`sid`), so ending a session revokes them: its id goes into
-- revoked_tokens, whose `jti` column holds token and session ids alike.
CREATE TABLE sessions (
    id           UUID PRIMARY KEY,
    user_id      BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_hash BYTEA       NOT NULL,
    -- The hash before the last rotation: shown again, it ends the session.
    retired_hash BYTEA,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    refreshed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- A deleted account keeps its row, so that the messages it sent keep their sender, but loses its
-- name, password, friends, blocks, groups and sessions.
ALTER TABLE users ADD COLUMN deleted_at TIMESTAMPTZ;

-- Single-use tickets that open a WebSocket without a token in the URL.
CREATE TABLE ws_tickets (
    hash       BYTEA PRIMARY KEY,
    user_id    BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id UUID        NOT NULL,
    token_id   UUID        NOT NULL,
    token_expires_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX ws_tickets_expires_at ON ws_tickets (expires_at);

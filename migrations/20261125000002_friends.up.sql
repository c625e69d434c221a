CREATE TYPE friend_request_status AS ENUM ('pending', 'accepted', 'declined', 'cancelled');

CREATE TABLE friend_requests (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    to_user_id   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status       friend_request_status NOT NULL DEFAULT 'pending',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (from_user_id <> to_user_id)
);
-- At most one pending request per pair, whichever way it points.
CREATE UNIQUE INDEX friend_requests_one_pending_per_pair
    ON friend_requests (LEAST(from_user_id, to_user_id), GREATEST(from_user_id, to_user_id))
    WHERE status = 'pending';
CREATE INDEX friend_requests_pending_to ON friend_requests (to_user_id) WHERE status = 'pending';
CREATE INDEX friend_requests_pending_from ON friend_requests (from_user_id) WHERE status = 'pending';

-- One row per friendship, stored with the smaller id first so a pair cannot appear twice.
CREATE TABLE friendships (
    user_low   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_high  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_low, user_high),
    CHECK (user_low < user_high)
);
CREATE INDEX friendships_user_high ON friendships (user_high);

-- Presence: who has a socket open on which server instance. A row per user and instance, added
-- with the user's first socket there and removed with the last; an instance that stops
-- renewing `instances.seen_at` (a crash) counts for nobody after 30 seconds, and the next
-- instance to look removes its rows. `users.last_seen_at` is when the user's last socket
-- anywhere closed; `presence_hidden` shows the user offline, without a last-seen time.
ALTER TABLE users
    ADD COLUMN last_seen_at timestamptz,
    ADD COLUMN presence_hidden boolean NOT NULL DEFAULT false;

CREATE TABLE instances (
    id      UUID PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE presence (
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    instance UUID   NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    since    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, instance)
);
CREATE INDEX presence_instance ON presence (instance);

DROP TABLE presence;
DROP TABLE instances;
ALTER TABLE users DROP COLUMN last_seen_at, DROP COLUMN presence_hidden;

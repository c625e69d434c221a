DROP TABLE ws_tickets;
ALTER TABLE users DROP COLUMN deleted_at;
DROP TABLE sessions;

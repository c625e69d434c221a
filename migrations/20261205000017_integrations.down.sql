DELETE FROM messages WHERE sender_id = 0;
DROP FUNCTION xfchat_post_system(bigint, uuid, text, text);
DROP FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], bigint[], text[], text, text, text);
DROP FUNCTION xfchat_hook_messages(bigint[], bigint[], bigint[], bigint[], bigint[], text);
DROP TABLE webhook_events;
ALTER TABLE revoked_tokens DROP COLUMN issued_before;
DROP TABLE external_users;
DELETE FROM users WHERE id = 0;

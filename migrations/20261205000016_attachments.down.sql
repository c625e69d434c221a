DROP FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], bigint[], text[], text, text);
DROP FUNCTION xfchat_store_messages(bigint[], bigint[], uuid[], text[], bigint[], text[], text, text);
DROP TRIGGER messages_deleted_drop_attachments ON messages;
DROP FUNCTION xfchat_drop_attachments();
ALTER TABLE messages DROP COLUMN attachments;
DROP TABLE attachment_chunks;
DROP TABLE attachments;

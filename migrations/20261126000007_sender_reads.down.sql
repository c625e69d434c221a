DROP FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], text, text);
ALTER FUNCTION xfchat_store_messages(bigint[], bigint[], uuid[], text[], text, text)
    RENAME TO xfchat_store_batch;

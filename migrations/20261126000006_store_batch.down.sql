DROP FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], text, text);

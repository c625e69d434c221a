-- Back to the planner's own choice of scans in the group commit's functions.
ALTER FUNCTION xfchat_store_messages(bigint[], bigint[], uuid[], text[], text, text)
    RESET enable_seqscan;
ALTER FUNCTION xfchat_store_messages(bigint[], bigint[], uuid[], text[], bigint[], text, text)
    RESET enable_seqscan;
ALTER FUNCTION xfchat_store_messages(bigint[], bigint[], uuid[], text[], bigint[], text[], text, text)
    RESET enable_seqscan;
ALTER FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], text, text)
    RESET enable_seqscan;
ALTER FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], bigint[], text, text)
    RESET enable_seqscan;
ALTER FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], bigint[], text[], text, text)
    RESET enable_seqscan;
ALTER FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], bigint[], text[], text, text, text)
    RESET enable_seqscan;
ALTER FUNCTION xfchat_hook_messages(bigint[], bigint[], bigint[], bigint[], bigint[], text)
    RESET enable_seqscan;

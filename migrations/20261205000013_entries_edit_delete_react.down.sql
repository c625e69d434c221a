-- Entries become plain rows again: an edit shows its new text, a delete or a reaction entry
-- its stored body (empty, or the emoji). Seqs stay gapless.
DROP FUNCTION xfchat_amend(bigint, bigint, text, bigint, text, integer);
DROP FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], bigint[], text, text);
DROP FUNCTION xfchat_store_messages(bigint[], bigint[], uuid[], text[], bigint[], text, text);
DROP TABLE reactions;
ALTER TABLE messages
    DROP COLUMN kind,
    DROP COLUMN target_seq,
    DROP COLUMN reply_to,
    DROP COLUMN edited_at,
    DROP COLUMN deleted_at;

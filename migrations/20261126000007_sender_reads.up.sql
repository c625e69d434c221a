-- Sending a message reads the chat up to it: a group commit moves each sender's read marker
-- (never backwards) to the last of their messages in the batch, in the same statement and
-- transaction, so a user's own messages never count as unread. The store itself is unchanged:
-- it keeps its body under a name of its own and this function calls it, then moves the markers
-- of the senders whose messages are now stored (new ones and repeats alike).
ALTER FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], text, text)
    RENAME TO xfchat_store_messages;

CREATE FUNCTION xfchat_store_batch(
    p_chats bigint[], p_senders bigint[], p_ids uuid[], p_bodies text[],
    p_channel text, p_node text)
RETURNS TABLE (
    ord integer, outcome text, id bigint, chat_id bigint, seq bigint, sender_id bigint,
    client_msg_id uuid, body text, created_at timestamptz, member_id bigint)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM xfchat_store_messages(p_chats, p_senders, p_ids, p_bodies, p_channel, p_node);

    UPDATE conversation_members cm SET last_read_seq = mine.seq
    FROM (
        SELECT m.conversation_id, m.sender_id, max(m.seq) AS seq
        FROM unnest(p_senders, p_ids) AS k(sender, cmid)
        JOIN messages m ON m.sender_id = k.sender AND m.client_msg_id = k.cmid
        GROUP BY m.conversation_id, m.sender_id
    ) mine
    WHERE cm.conversation_id = mine.conversation_id AND cm.user_id = mine.sender_id
      AND cm.last_read_seq < mine.seq;
END
$$;

-- For the backends that build on XFChat: the system user that service messages come from,
-- users of the app's own tokens, revocations by issue time, and the webhook outbox.

-- The system: the sender of messages a backend posts with the service key. Id 0, which the
-- identity never hands out, and a username that signup and login refuse.
INSERT INTO users (id, username, display_name, password_hash)
OVERRIDING SYSTEM VALUE VALUES (0, 'xfchat:system', 'System', '!');

-- A user of the app's own tokens, known by the token's `sub`; created on first use.
CREATE TABLE external_users (
    subject TEXT   PRIMARY KEY,
    user_id BIGINT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE
);

-- A revocation of every token of the user issued up to `issued_before` (the app's own tokens
-- have no session to end).
ALTER TABLE revoked_tokens ADD COLUMN issued_before TIMESTAMPTZ;

-- The outbox: an event per message and recipient, written in the commit of the message, so a
-- crash loses none; deleted once the receiver took it. `due_at` is the next attempt.
CREATE TABLE webhook_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         TEXT        NOT NULL,
    message_id   BIGINT      NOT NULL,
    recipient_id BIGINT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    due_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts     INTEGER     NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX webhook_events_due ON webhook_events (due_at, id);

-- The events `p_hooks` (a comma-separated list) asks for, of the new messages `p_ids` of
-- chats `p_chats` by `p_senders`, whose members are `p_member_users` (of `p_member_chats`):
-- `message.offline` for each member but the sender with no socket open on a live server,
-- `message.created` once per message. Reads neither messages nor members back.
CREATE FUNCTION xfchat_hook_messages(
    p_ids bigint[], p_chats bigint[], p_senders bigint[], p_member_chats bigint[],
    p_member_users bigint[], p_hooks text) RETURNS void
LANGUAGE sql
SET plan_cache_mode = force_generic_plan
AS $$
    INSERT INTO webhook_events (kind, message_id, recipient_id)
    SELECT e.kind, e.message_id, e.recipient_id FROM (
        SELECT 'message.offline' AS kind, n.id AS message_id, mb.usr AS recipient_id
        FROM unnest(p_ids, p_chats, p_senders) AS n(id, chat, sender)
        JOIN unnest(p_member_chats, p_member_users) AS mb(chat, usr)
          ON mb.chat = n.chat AND mb.usr <> n.sender
        WHERE 'message.offline' = ANY (string_to_array(p_hooks, ','))
          AND NOT EXISTS (
              SELECT 1 FROM presence p JOIN instances i ON i.id = p.instance
              WHERE p.user_id = mb.usr AND i.seen_at > now() - interval '30 seconds')
        UNION ALL
        SELECT 'message.created', n.id, NULL
        FROM unnest(p_ids) AS n(id)
        WHERE 'message.created' = ANY (string_to_array(p_hooks, ','))
    ) e
    ORDER BY e.message_id, e.recipient_id;
$$;

-- The group commit with the webhook events of what it stored: the same as the 8-argument
-- version, and with `p_hooks` set, `xfchat_hook_messages` for the new messages in the commit.
CREATE FUNCTION xfchat_store_batch(
    p_chats bigint[], p_senders bigint[], p_ids uuid[], p_bodies text[], p_replies bigint[],
    p_attachments text[], p_channel text, p_node text, p_hooks text)
RETURNS TABLE (
    ord integer, outcome text, id bigint, chat_id bigint, seq bigint, sender_id bigint,
    client_msg_id uuid, body text, created_at timestamptz, reply_to bigint, attachments uuid[],
    member_id bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_new bigint[] := '{}';
    v_chats bigint[] := '{}';
    v_senders bigint[] := '{}';
    v_member_chats bigint[] := '{}';
    v_member_users bigint[] := '{}';
    r record;
BEGIN
    FOR r IN
        SELECT * FROM xfchat_store_messages(
            p_chats, p_senders, p_ids, p_bodies, p_replies, p_attachments, p_channel, p_node)
    LOOP
        IF r.outcome = 'new' THEN
            v_new := v_new || r.id;
            v_chats := v_chats || r.chat_id;
            v_senders := v_senders || r.sender_id;
        ELSIF r.outcome = 'member' THEN
            v_member_chats := v_member_chats || r.chat_id;
            v_member_users := v_member_users || r.member_id;
        END IF;
        ord := r.ord; outcome := r.outcome; id := r.id; chat_id := r.chat_id; seq := r.seq;
        sender_id := r.sender_id; client_msg_id := r.client_msg_id; body := r.body;
        created_at := r.created_at; reply_to := r.reply_to; attachments := r.attachments;
        member_id := r.member_id;
        RETURN NEXT;
    END LOOP;

    UPDATE conversation_members cm SET last_read_seq = mine.seq
    FROM (
        SELECT m.conversation_id, m.sender_id, max(m.seq) AS seq
        FROM unnest(p_senders, p_ids) AS k(sender, cmid)
        CROSS JOIN LATERAL (
            SELECT m.conversation_id, m.sender_id, m.seq FROM messages m
            WHERE m.sender_id = k.sender AND m.client_msg_id = k.cmid LIMIT 1) m
        GROUP BY m.conversation_id, m.sender_id
    ) mine
    WHERE cm.conversation_id = mine.conversation_id AND cm.user_id = mine.sender_id
      AND cm.last_read_seq < mine.seq;

    IF p_hooks IS NOT NULL AND cardinality(v_new) > 0 THEN
        PERFORM xfchat_hook_messages(
            v_new, v_chats, v_senders, v_member_chats, v_member_users, p_hooks);
    END IF;
END
$$;

-- A message from the system into chat `p_chat`, with its webhook events: the chat's next seq
-- under its row lock, like any message. A repeat of `p_cmid` answers the message stored the
-- first time. Answers nothing when the chat does not exist; the rows after the message are
-- the chat's members (`member_id`).
CREATE FUNCTION xfchat_post_system(p_chat bigint, p_cmid uuid, p_body text, p_hooks text)
RETURNS TABLE (
    outcome text, id bigint, seq bigint, body text, created_at timestamptz, member_id bigint)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v messages;
    v_outcome text := 'replay';
    v_members bigint[];
BEGIN
    PERFORM 1 FROM conversations c WHERE c.id = p_chat FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(cm.user_id), '{}') INTO v_members
    FROM conversation_members cm WHERE cm.conversation_id = p_chat;
    SELECT * INTO v FROM messages m WHERE m.sender_id = 0 AND m.client_msg_id = p_cmid;
    IF NOT FOUND THEN
        UPDATE conversations c SET last_seq = c.last_seq + 1 WHERE c.id = p_chat;
        INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body)
        SELECT p_chat, c.last_seq, 0, p_cmid, p_body FROM conversations c WHERE c.id = p_chat
        RETURNING * INTO v;
        v_outcome := 'new';
        IF p_hooks IS NOT NULL THEN
            PERFORM xfchat_hook_messages(
                ARRAY[v.id], ARRAY[p_chat], ARRAY[0::bigint],
                array_fill(p_chat, ARRAY[cardinality(v_members)]), v_members, p_hooks);
        END IF;
    ELSIF v.conversation_id <> p_chat THEN
        v_outcome := 'reused';
    END IF;
    RETURN QUERY SELECT v_outcome, v.id, v.seq, v.body, v.created_at, NULL::bigint;
    RETURN QUERY SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::timestamptz,
                        u.usr
                 FROM unnest(v_members) AS u(usr);
END
$$;

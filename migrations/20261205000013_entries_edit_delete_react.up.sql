-- Edits, deletes and reactions are entries of a chat's log, each with its own seq, so sync and
-- resume replay them in order with the messages and a client that was away learns of them the
-- same way. An entry's `target_seq` names the message it acts on; the message row itself holds
-- the current state (the edited body with `edited_at`, or no body at all once deleted), and
-- `reactions` the current reactions. A message may answer an earlier message of its chat
-- (`reply_to`).
ALTER TABLE messages
    ADD COLUMN kind text NOT NULL DEFAULT 'message',
    ADD COLUMN target_seq bigint,
    ADD COLUMN reply_to bigint,
    ADD COLUMN edited_at timestamptz,
    ADD COLUMN deleted_at timestamptz,
    ADD CONSTRAINT messages_kind
        CHECK (kind IN ('message', 'edit', 'delete', 'react', 'unreact')),
    ADD CONSTRAINT messages_entry_target CHECK ((kind = 'message') = (target_seq IS NULL)),
    ADD CONSTRAINT messages_reply_earlier CHECK (reply_to IS NULL OR (reply_to >= 1 AND reply_to < seq));

CREATE TABLE reactions (
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    emoji           TEXT   NOT NULL,
    user_id         BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq, emoji, user_id),
    FOREIGN KEY (conversation_id, seq) REFERENCES messages (conversation_id, seq) ON DELETE CASCADE
);

-- The group commit with replies: as 20261205000012's, with `p_replies` (a seq of the same chat
-- per send, or NULL). A send whose reply_to names no message of its chat is answered
-- `bad_reply` and not stored. The six-argument functions stay for nodes not yet upgraded.
CREATE OR REPLACE FUNCTION xfchat_store_messages(
    p_chats bigint[], p_senders bigint[], p_ids uuid[], p_bodies text[], p_replies bigint[],
    p_channel text, p_node text)
RETURNS TABLE (
    ord integer, outcome text, id bigint, chat_id bigint, seq bigint, sender_id bigint,
    client_msg_id uuid, body text, created_at timestamptz, reply_to bigint, member_id bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_blocked bigint[];
    v_member_chats bigint[];
    v_member_users bigint[];
    v_new_chats bigint[] := '{}';
    v_new_seqs bigint[] := '{}';
    v_payload text := '';
    v_item text;
    r record;
BEGIN
    SELECT coalesce(array_agg(l.id) FILTER (WHERE l.blocked), '{}') INTO v_blocked
    FROM (
        SELECT c.id, c.kind = 'direct' AND (b.found IS NOT NULL OR f.found IS NULL) AS blocked
        FROM conversations c
        LEFT JOIN LATERAL (
            SELECT true AS found FROM blocks b
            WHERE (b.blocker_id = c.direct_low AND b.blocked_id = c.direct_high)
               OR (b.blocker_id = c.direct_high AND b.blocked_id = c.direct_low) LIMIT 1) b ON true
        LEFT JOIN LATERAL (
            SELECT true AS found FROM friendships f
            WHERE f.user_low = c.direct_low AND f.user_high = c.direct_high LIMIT 1) f ON true
        WHERE c.id = ANY (p_chats) ORDER BY c.id FOR NO KEY UPDATE OF c
    ) l;

    SELECT coalesce(array_agg(m.conversation_id), '{}'), coalesce(array_agg(m.user_id), '{}')
    INTO v_member_chats, v_member_users
    FROM conversation_members m WHERE m.conversation_id = ANY (p_chats);

    FOR r IN
        WITH input AS (
            SELECT i.chat, i.sender, i.cmid, i.body, i.reply, i.ord::integer AS ord,
                   EXISTS (SELECT 1 FROM unnest(v_member_chats, v_member_users) AS mb(chat, usr)
                           WHERE mb.chat = i.chat AND mb.usr = i.sender) AS is_member,
                   i.chat = ANY (v_blocked) AS is_blocked,
                   i.reply IS NULL OR t.found IS NOT NULL AS reply_ok
            FROM unnest(p_chats, p_senders, p_ids, p_bodies, p_replies) WITH ORDINALITY
                AS i(chat, sender, cmid, body, reply, ord)
            LEFT JOIN LATERAL (
                SELECT true AS found FROM messages t
                WHERE t.conversation_id = i.chat AND t.seq = i.reply AND t.kind = 'message'
                LIMIT 1) t ON true
        ),
        earlier AS (
            SELECT m.* FROM (SELECT DISTINCT i.sender, i.cmid FROM input i) k
            CROSS JOIN LATERAL (
                SELECT * FROM messages m
                WHERE m.sender_id = k.sender AND m.client_msg_id = k.cmid LIMIT 1) m
        ),
        fresh AS (
            SELECT DISTINCT ON (i.sender, i.cmid) i.* FROM input i
            WHERE i.is_member AND NOT i.is_blocked AND i.reply_ok
              AND NOT EXISTS (SELECT 1 FROM earlier e
                              WHERE e.sender_id = i.sender AND e.client_msg_id = i.cmid)
            ORDER BY i.sender, i.cmid, i.ord
        ),
        counts AS (SELECT f.chat, count(*) AS n FROM fresh f GROUP BY f.chat),
        bumped AS (
            UPDATE conversations c SET last_seq = c.last_seq + counts.n FROM counts
            WHERE c.id = counts.chat
            RETURNING c.id, c.last_seq - counts.n AS base
        ),
        inserted AS (
            INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body, reply_to)
            SELECT f.chat, b.base + row_number() OVER (PARTITION BY f.chat ORDER BY f.ord),
                   f.sender, f.cmid, f.body, f.reply
            FROM fresh f JOIN bumped b ON b.id = f.chat
            ORDER BY f.ord
            RETURNING messages.*
        ),
        stored AS (SELECT * FROM earlier UNION ALL SELECT * FROM inserted)
        SELECT i.ord,
               CASE WHEN NOT i.is_member THEN 'not_found'
                    WHEN i.is_blocked THEN 'blocked'
                    WHEN f.ord IS NULL AND s.id IS NULL AND NOT i.reply_ok THEN 'bad_reply'
                    WHEN f.ord IS NOT NULL THEN 'new'
                    WHEN s.conversation_id = i.chat THEN 'replay'
                    ELSE 'reused' END AS outcome,
               s.id, s.conversation_id, s.seq, s.sender_id, s.client_msg_id, s.body, s.created_at,
               s.reply_to
        FROM input i
        LEFT JOIN fresh f ON f.ord = i.ord
        LEFT JOIN stored s ON s.sender_id = i.sender AND s.client_msg_id = i.cmid
        ORDER BY i.ord
    LOOP
        IF r.outcome = 'new' THEN
            v_new_chats := v_new_chats || r.conversation_id;
            v_new_seqs := v_new_seqs || r.seq;
        END IF;
        ord := r.ord; outcome := r.outcome; id := r.id; chat_id := r.conversation_id;
        seq := r.seq; sender_id := r.sender_id; client_msg_id := r.client_msg_id;
        body := r.body; created_at := r.created_at; reply_to := r.reply_to; member_id := NULL;
        RETURN NEXT;
    END LOOP;

    IF p_node IS NOT NULL THEN
        FOR r IN
            SELECT u.chat, min(u.seq) AS first, max(u.seq) AS last
            FROM unnest(v_new_chats, v_new_seqs) AS u(chat, seq) GROUP BY u.chat
        LOOP
            v_item := r.chat || ':' || r.first || '-' || r.last;
            IF v_payload <> '' AND octet_length(v_payload) + 1 + octet_length(v_item) > 7900 THEN
                PERFORM pg_notify(p_channel, v_payload);
                v_payload := '';
            END IF;
            v_payload := CASE WHEN v_payload = '' THEN p_node || '|' || v_item
                              ELSE v_payload || ',' || v_item END;
        END LOOP;
        IF v_payload <> '' THEN
            PERFORM pg_notify(p_channel, v_payload);
        END IF;
    END IF;

    RETURN QUERY
    SELECT NULL::integer, 'member', NULL::bigint, mb.chat, NULL::bigint, NULL::bigint, NULL::uuid,
           NULL::text, NULL::timestamptz, NULL::bigint, mb.usr
    FROM unnest(v_member_chats, v_member_users) AS mb(chat, usr);
END
$$;

CREATE OR REPLACE FUNCTION xfchat_store_batch(
    p_chats bigint[], p_senders bigint[], p_ids uuid[], p_bodies text[], p_replies bigint[],
    p_channel text, p_node text)
RETURNS TABLE (
    ord integer, outcome text, id bigint, chat_id bigint, seq bigint, sender_id bigint,
    client_msg_id uuid, body text, created_at timestamptz, reply_to bigint, member_id bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM xfchat_store_messages(
        p_chats, p_senders, p_ids, p_bodies, p_replies, p_channel, p_node);

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
END
$$;

-- One entry (edit, delete, react, unreact) by `p_actor` on message `p_target` of `p_chat`, in
-- one round trip: checks, the change of the message's state, the entry with the chat's next
-- seq, and the chat's members for fan-out. The outcome is `new` (with the entry), `unchanged`
-- (nothing to do: the same body, a reaction already there or not there, a message already
-- deleted), `not_found` (not a member, no such message, or a deleted one for anything but
-- delete), `forbidden` (another's message), `blocked` (a closed direct chat) or `too_many`
-- (`p_max_reactions` distinct reactions already).
CREATE FUNCTION xfchat_amend(
    p_chat bigint, p_actor bigint, p_kind text, p_target bigint, p_body text,
    p_max_reactions integer)
RETURNS TABLE (
    outcome text, id bigint, chat_id bigint, seq bigint, sender_id bigint, client_msg_id uuid,
    body text, created_at timestamptz, kind text, target_seq bigint, member_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_chat record;
    v_target record;
    v_seq bigint;
    v_entry messages;
BEGIN
    SELECT c.kind = 'group' AND c.created_by = p_actor AS moderates,
           c.kind = 'direct' AND (b.found IS NOT NULL OR f.found IS NULL) AS blocked
    INTO v_chat
    FROM conversations c
    JOIN conversation_members cm ON cm.conversation_id = c.id AND cm.user_id = p_actor
    LEFT JOIN LATERAL (
        SELECT true AS found FROM blocks b
        WHERE (b.blocker_id = c.direct_low AND b.blocked_id = c.direct_high)
           OR (b.blocker_id = c.direct_high AND b.blocked_id = c.direct_low) LIMIT 1) b ON true
    LEFT JOIN LATERAL (
        SELECT true AS found FROM friendships f
        WHERE f.user_low = c.direct_low AND f.user_high = c.direct_high LIMIT 1) f ON true
    WHERE c.id = p_chat
    FOR NO KEY UPDATE OF c;
    IF NOT FOUND THEN
        outcome := 'not_found'; RETURN NEXT; RETURN;
    END IF;

    SELECT m.sender_id, m.body, m.deleted_at IS NOT NULL AS deleted INTO v_target
    FROM messages m
    WHERE m.conversation_id = p_chat AND m.seq = p_target AND m.kind = 'message'
    FOR UPDATE;
    IF NOT FOUND OR (v_target.deleted AND p_kind <> 'delete') THEN
        outcome := 'not_found'; RETURN NEXT; RETURN;
    END IF;

    IF p_kind = 'delete' THEN
        IF v_target.sender_id <> p_actor AND NOT v_chat.moderates THEN
            outcome := 'forbidden'; RETURN NEXT; RETURN;
        END IF;
        IF v_target.deleted THEN
            outcome := 'unchanged'; RETURN NEXT; RETURN;
        END IF;
        -- The body goes from the database, with the bodies of its edits.
        UPDATE messages m SET body = '', deleted_at = now()
        WHERE m.conversation_id = p_chat
          AND (m.seq = p_target OR (m.kind = 'edit' AND m.target_seq = p_target));
        DELETE FROM reactions r WHERE r.conversation_id = p_chat AND r.seq = p_target;
    ELSIF v_chat.blocked THEN
        outcome := 'blocked'; RETURN NEXT; RETURN;
    ELSIF p_kind = 'edit' THEN
        IF v_target.sender_id <> p_actor THEN
            outcome := 'forbidden'; RETURN NEXT; RETURN;
        END IF;
        IF v_target.body = p_body THEN
            outcome := 'unchanged'; RETURN NEXT; RETURN;
        END IF;
        UPDATE messages m SET body = p_body, edited_at = now()
        WHERE m.conversation_id = p_chat AND m.seq = p_target;
    ELSIF p_kind = 'react' THEN
        IF EXISTS (SELECT 1 FROM reactions r
                   WHERE r.conversation_id = p_chat AND r.seq = p_target
                     AND r.emoji = p_body AND r.user_id = p_actor) THEN
            outcome := 'unchanged'; RETURN NEXT; RETURN;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM reactions r
                       WHERE r.conversation_id = p_chat AND r.seq = p_target AND r.emoji = p_body)
           AND (SELECT count(DISTINCT r.emoji) FROM reactions r
                WHERE r.conversation_id = p_chat AND r.seq = p_target) >= p_max_reactions THEN
            outcome := 'too_many'; RETURN NEXT; RETURN;
        END IF;
        INSERT INTO reactions (conversation_id, seq, emoji, user_id)
        VALUES (p_chat, p_target, p_body, p_actor);
    ELSIF p_kind = 'unreact' THEN
        DELETE FROM reactions r
        WHERE r.conversation_id = p_chat AND r.seq = p_target
          AND r.emoji = p_body AND r.user_id = p_actor;
        IF NOT FOUND THEN
            outcome := 'unchanged'; RETURN NEXT; RETURN;
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown entry kind %', p_kind USING ERRCODE = '22023';
    END IF;

    UPDATE conversations c SET last_seq = c.last_seq + 1 WHERE c.id = p_chat
    RETURNING c.last_seq INTO v_seq;
    INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body, kind, target_seq)
    VALUES (p_chat, v_seq, p_actor, gen_random_uuid(),
            CASE WHEN p_kind = 'delete' THEN '' ELSE p_body END, p_kind, p_target)
    RETURNING * INTO v_entry;
    -- Whoever had read everything before their own entry has read it too.
    UPDATE conversation_members cm SET last_read_seq = v_seq
    WHERE cm.conversation_id = p_chat AND cm.user_id = p_actor AND cm.last_read_seq = v_seq - 1;

    outcome := 'new'; id := v_entry.id; chat_id := p_chat; seq := v_seq;
    sender_id := p_actor; client_msg_id := v_entry.client_msg_id; body := v_entry.body;
    created_at := v_entry.created_at; kind := p_kind; target_seq := p_target; member_id := NULL;
    RETURN NEXT;
    RETURN QUERY
    SELECT 'member', NULL::bigint, p_chat, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text,
           NULL::timestamptz, NULL::text, NULL::bigint, m.user_id
    FROM conversation_members m WHERE m.conversation_id = p_chat;
END
$$;

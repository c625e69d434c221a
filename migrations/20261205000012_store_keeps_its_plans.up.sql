-- The group commit's functions keep one plan per statement for a connection's life instead of
-- planning every statement at every call. Left to choose, PostgreSQL planned the store's large
-- statement anew at each commit (a custom plan: the arrays' sizes made the generic plan look
-- dearer), which was about half of PostgreSQL's CPU per message at 1,000 msg/s. A kept plan must
-- not depend on how large a table was when it was made, so every read of a table by the
-- batch's keys is a lateral probe with LIMIT 1, which the planner cannot turn into a hash of the
-- whole table: the earlier-send lookups since 20261205000011, and now the checks for a block or
-- a friendship of a direct chat, which a generic plan had made one hash of every friendship at
-- each commit. The pool replaces its connections at least every 30 minutes, and their plans
-- with them. Otherwise both functions are those of 20261205000011.
CREATE OR REPLACE FUNCTION xfchat_store_messages(
    p_chats bigint[], p_senders bigint[], p_ids uuid[], p_bodies text[],
    p_channel text, p_node text)
RETURNS TABLE (
    ord integer, outcome text, id bigint, chat_id bigint, seq bigint, sender_id bigint,
    client_msg_id uuid, body text, created_at timestamptz, member_id bigint)
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
            SELECT i.chat, i.sender, i.cmid, i.body, i.ord::integer AS ord,
                   EXISTS (SELECT 1 FROM unnest(v_member_chats, v_member_users) AS mb(chat, usr)
                           WHERE mb.chat = i.chat AND mb.usr = i.sender) AS is_member,
                   i.chat = ANY (v_blocked) AS is_blocked
            FROM unnest(p_chats, p_senders, p_ids, p_bodies) WITH ORDINALITY
                AS i(chat, sender, cmid, body, ord)
        ),
        earlier AS (
            SELECT m.* FROM (SELECT DISTINCT i.sender, i.cmid FROM input i) k
            CROSS JOIN LATERAL (
                SELECT * FROM messages m
                WHERE m.sender_id = k.sender AND m.client_msg_id = k.cmid LIMIT 1) m
        ),
        fresh AS (
            SELECT DISTINCT ON (i.sender, i.cmid) i.* FROM input i
            WHERE i.is_member AND NOT i.is_blocked
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
            INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body)
            SELECT f.chat, b.base + row_number() OVER (PARTITION BY f.chat ORDER BY f.ord),
                   f.sender, f.cmid, f.body
            FROM fresh f JOIN bumped b ON b.id = f.chat
            ORDER BY f.ord
            RETURNING messages.*
        ),
        stored AS (SELECT * FROM earlier UNION ALL SELECT * FROM inserted)
        SELECT i.ord,
               CASE WHEN NOT i.is_member THEN 'not_found'
                    WHEN i.is_blocked THEN 'blocked'
                    WHEN f.ord IS NOT NULL THEN 'new'
                    WHEN s.conversation_id = i.chat THEN 'replay'
                    ELSE 'reused' END AS outcome,
               s.id, s.conversation_id, s.seq, s.sender_id, s.client_msg_id, s.body, s.created_at
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
        body := r.body; created_at := r.created_at; member_id := NULL;
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
           NULL::text, NULL::timestamptz, mb.usr
    FROM unnest(v_member_chats, v_member_users) AS mb(chat, usr);
END
$$;

CREATE OR REPLACE FUNCTION xfchat_store_batch(
    p_chats bigint[], p_senders bigint[], p_ids uuid[], p_bodies text[],
    p_channel text, p_node text)
RETURNS TABLE (
    ord integer, outcome text, id bigint, chat_id bigint, seq bigint, sender_id bigint,
    client_msg_id uuid, body text, created_at timestamptz, member_id bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM xfchat_store_messages(p_chats, p_senders, p_ids, p_bodies, p_channel, p_node);

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

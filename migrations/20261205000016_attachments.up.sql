-- Attachments, stored in PostgreSQL like everything else: a row per file and its bytes in
-- chunks, written as the upload streams in (`complete` once all of it is), read back the same
-- way. A message names its attachments (`messages.attachments`); a send may name only complete
-- attachments the sender uploaded to the same chat, else it is answered `bad_attachment` and
-- not stored. Deleting a message for everyone deletes its attachments' bytes too. Incomplete
-- uploads older than a day are swept by the servers.
CREATE TABLE attachments (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    uploader_id     BIGINT REFERENCES users (id) ON DELETE SET NULL,
    content_type    TEXT   NOT NULL,
    filename        TEXT,
    size            BIGINT NOT NULL DEFAULT 0,
    complete        BOOLEAN NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX attachments_incomplete ON attachments (created_at) WHERE NOT complete;
-- Each uploader's bytes of the last day, for the daily quota.
CREATE INDEX attachments_uploader ON attachments (uploader_id, created_at);

CREATE TABLE attachment_chunks (
    attachment_id UUID    NOT NULL REFERENCES attachments (id) ON DELETE CASCADE,
    n             INTEGER NOT NULL,
    data          BYTEA   NOT NULL,
    PRIMARY KEY (attachment_id, n)
);

ALTER TABLE messages ADD COLUMN attachments uuid[];

CREATE FUNCTION xfchat_drop_attachments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM attachments WHERE id = ANY (OLD.attachments);
    NEW.attachments := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER messages_deleted_drop_attachments
    BEFORE UPDATE OF deleted_at ON messages FOR EACH ROW
    WHEN (NEW.deleted_at IS NOT NULL AND OLD.attachments IS NOT NULL)
    EXECUTE FUNCTION xfchat_drop_attachments();

-- The group commit with attachments: as 20261205000013's, with `p_attachments` (per send, the
-- attachment ids joined by commas, or empty). The seven-argument functions stay for nodes not
-- yet upgraded.
CREATE OR REPLACE FUNCTION xfchat_store_messages(
    p_chats bigint[], p_senders bigint[], p_ids uuid[], p_bodies text[], p_replies bigint[],
    p_attachments text[], p_channel text, p_node text)
RETURNS TABLE (
    ord integer, outcome text, id bigint, chat_id bigint, seq bigint, sender_id bigint,
    client_msg_id uuid, body text, created_at timestamptz, reply_to bigint, attachments uuid[],
    member_id bigint)
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
            SELECT i.chat, i.sender, i.cmid, i.body, i.reply, a.ids AS atts, i.ord::integer AS ord,
                   EXISTS (SELECT 1 FROM unnest(v_member_chats, v_member_users) AS mb(chat, usr)
                           WHERE mb.chat = i.chat AND mb.usr = i.sender) AS is_member,
                   i.chat = ANY (v_blocked) AS is_blocked,
                   i.reply IS NULL OR t.found IS NOT NULL AS reply_ok,
                   a.ids IS NULL OR (
                       SELECT count(*) FROM attachments x
                       WHERE x.id = ANY (a.ids) AND x.conversation_id = i.chat
                         AND x.uploader_id = i.sender AND x.complete
                   ) = cardinality(a.ids) AS atts_ok
            FROM unnest(p_chats, p_senders, p_ids, p_bodies, p_replies, p_attachments)
                WITH ORDINALITY AS i(chat, sender, cmid, body, reply, atts, ord)
            CROSS JOIN LATERAL (
                SELECT CASE WHEN coalesce(i.atts, '') = '' THEN NULL
                            ELSE string_to_array(i.atts, ',')::uuid[] END AS ids) a
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
            WHERE i.is_member AND NOT i.is_blocked AND i.reply_ok AND i.atts_ok
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
            INSERT INTO messages
                (conversation_id, seq, sender_id, client_msg_id, body, reply_to, attachments)
            SELECT f.chat, b.base + row_number() OVER (PARTITION BY f.chat ORDER BY f.ord),
                   f.sender, f.cmid, f.body, f.reply, f.atts
            FROM fresh f JOIN bumped b ON b.id = f.chat
            ORDER BY f.ord
            RETURNING messages.*
        ),
        stored AS (SELECT * FROM earlier UNION ALL SELECT * FROM inserted)
        SELECT i.ord,
               CASE WHEN NOT i.is_member THEN 'not_found'
                    WHEN i.is_blocked THEN 'blocked'
                    WHEN f.ord IS NULL AND s.id IS NULL AND NOT i.reply_ok THEN 'bad_reply'
                    WHEN f.ord IS NULL AND s.id IS NULL AND NOT i.atts_ok THEN 'bad_attachment'
                    WHEN f.ord IS NOT NULL THEN 'new'
                    WHEN s.conversation_id = i.chat THEN 'replay'
                    ELSE 'reused' END AS outcome,
               s.id, s.conversation_id, s.seq, s.sender_id, s.client_msg_id, s.body, s.created_at,
               s.reply_to, s.attachments
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
        body := r.body; created_at := r.created_at; reply_to := r.reply_to;
        attachments := r.attachments; member_id := NULL;
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
           NULL::text, NULL::timestamptz, NULL::bigint, NULL::uuid[], mb.usr
    FROM unnest(v_member_chats, v_member_users) AS mb(chat, usr);
END
$$;

CREATE OR REPLACE FUNCTION xfchat_store_batch(
    p_chats bigint[], p_senders bigint[], p_ids uuid[], p_bodies text[], p_replies bigint[],
    p_attachments text[], p_channel text, p_node text)
RETURNS TABLE (
    ord integer, outcome text, id bigint, chat_id bigint, seq bigint, sender_id bigint,
    client_msg_id uuid, body text, created_at timestamptz, reply_to bigint, attachments uuid[],
    member_id bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM xfchat_store_messages(
        p_chats, p_senders, p_ids, p_bodies, p_replies, p_attachments, p_channel, p_node);

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

//! Stored messages. Each message takes the next `seq` of its chat in the transaction that stores
//! it, so seqs are gapless and strictly increasing per chat. Sends are stored in batches (group
//! commit) by the hub's persist workers.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{Acquire, PgConnection};
use uuid::Uuid;

use crate::bus;
use crate::error::{is_unique_violation, AppError, AppResult};
use crate::ids::{ChatId, MessageId, UserId};
use crate::protocol::ErrorCode;

pub use crate::protocol::Message;

/// A `messages` row, as the queries read it.
#[derive(sqlx::FromRow)]
struct Row {
    id: MessageId,
    chat_id: ChatId,
    seq: i64,
    sender_id: UserId,
    client_msg_id: Uuid,
    body: String,
    created_at: DateTime<Utc>,
}

impl From<Row> for Message {
    fn from(r: Row) -> Self {
        Message {
            id: r.id,
            chat_id: r.chat_id,
            seq: r.seq,
            sender_id: r.sender_id,
            client_msg_id: r.client_msg_id,
            body: r.body,
            created_at: r.created_at,
        }
    }
}

const MESSAGE_COLUMNS: &str =
    "id, conversation_id AS chat_id, seq, sender_id, client_msg_id, body, created_at";

/// One send waiting to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub chat: ChatId,
    pub sender: UserId,
    pub client_msg_id: Uuid,
    pub body: String,
}

/// What became of one send in a batch.
#[derive(Debug)]
pub enum Outcome {
    /// Stored now, with the next seq of its chat.
    New(Message),
    /// Stored by an earlier try of the same send; answered again, not stored twice.
    Replay(Message),
    /// Refused: the sender is not a member, reused a client_msg_id in another chat, or sent
    /// something PostgreSQL cannot store.
    Rejected(AppError),
    /// Not stored because the database failed (connection lost, timeout, overload); the same
    /// send can be retried.
    Failed(AppError),
}

/// The result of one group commit: an outcome per send, in order, and the members of every chat
/// the batch touched (for fan-out, read in the same transaction).
#[derive(Debug)]
pub struct Committed {
    pub outcomes: Vec<Outcome>,
    pub members: HashMap<ChatId, Vec<UserId>>,
}

const SENDER_CLIENT_MSG_ID: &str = "messages_sender_client_msg_id";

/// True when `err` says another transaction stored the same sender and client_msg_id first: a
/// concurrent try of the same send, or its id reused in a chat on another persist worker.
pub fn is_duplicate_send(err: &sqlx::Error) -> bool {
    is_unique_violation(err, SENDER_CLIENT_MSG_ID)
}

/// The answer to one send that PostgreSQL refused for its own values (see
/// [`crate::error::is_input_error`]).
pub fn refusal(err: sqlx::Error) -> AppError {
    if is_duplicate_send(&err) {
        reused()
    } else if crate::error::is_data_error(&err) {
        AppError::invalid("body: holds characters the database cannot store")
    } else {
        tracing::warn!(error = %err, "a send broke a constraint");
        AppError::invalid("the message cannot be stored as sent")
    }
}

fn reused() -> AppError {
    AppError::conflict(
        ErrorCode::ClientMsgIdReused,
        "client_msg_id was already used for a message in another chat",
    )
}

/// Stores a batch of sends in one transaction: one statement to lock the batch's chats, one
/// query for members, one for earlier tries, one to take each chat's seqs, one insert, and,
/// with `announce_as` (this node's id), one `NOTIFY` naming the seqs stored per chat, which
/// PostgreSQL delivers to the other nodes only if the transaction commits. Sends to one chat get
/// seqs in batch order.
pub async fn store_batch(
    conn: &mut PgConnection,
    batch: &[NewMessage],
    announce_as: Option<&str>,
) -> Result<Committed, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let chat_ids: Vec<ChatId> = batch.iter().map(|m| m.chat).collect();
    // The chat rows are locked first, as membership changes lock them: the members read next
    // are those after any change committed before this batch, so nobody removed hears of it.
    let blocked: HashSet<ChatId> = sqlx::query_as::<_, (ChatId, bool)>(
        "SELECT c.id, c.kind = 'direct' AND EXISTS (SELECT 1 FROM blocks b              WHERE (b.blocker_id = c.direct_low AND b.blocked_id = c.direct_high)                 OR (b.blocker_id = c.direct_high AND b.blocked_id = c.direct_low))          FROM conversations c WHERE c.id = ANY($1) ORDER BY c.id FOR NO KEY UPDATE OF c",
    )
    .bind(&chat_ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .filter_map(|(chat, blocked)| blocked.then_some(chat))
    .collect();
    let rows: Vec<(ChatId, UserId)> = sqlx::query_as(
        "SELECT conversation_id, user_id FROM conversation_members WHERE conversation_id = ANY($1)",
    )
    .bind(&chat_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut members: HashMap<ChatId, Vec<UserId>> = HashMap::new();
    for (chat, user) in rows {
        members.entry(chat).or_default().push(user);
    }

    let senders: Vec<UserId> = batch.iter().map(|m| m.sender).collect();
    let client_ids: Vec<Uuid> = batch.iter().map(|m| m.client_msg_id).collect();
    let earlier: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m \
         JOIN unnest($1::bigint[], $2::uuid[]) AS k(sender, cmid) \
         ON m.sender_id = k.sender AND m.client_msg_id = k.cmid"
    ))
    .bind(&senders)
    .bind(&client_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut stored: HashMap<(UserId, Uuid), Message> = earlier
        .into_iter()
        .map(|r| ((r.sender_id, r.client_msg_id), Message::from(r)))
        .collect();

    // Decide each send; `fresh` holds the indexes that get a new row. A repeat of a send within
    // the batch stays undecided here and is answered from its first try below.
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(batch.len());
    let mut fresh: Vec<usize> = Vec::new();
    let mut first_try: HashMap<(UserId, Uuid), usize> = HashMap::new();
    for (i, m) in batch.iter().enumerate() {
        let key = (m.sender, m.client_msg_id);
        let is_member = members
            .get(&m.chat)
            .is_some_and(|ms| ms.contains(&m.sender));
        let decided = if !is_member {
            Some(Outcome::Rejected(AppError::NotFound))
        } else if blocked.contains(&m.chat) {
            Some(Outcome::Rejected(AppError::Forbidden(
                "one of you blocked the other in this direct chat".into(),
            )))
        } else if stored.contains_key(&key) || first_try.contains_key(&key) {
            None
        } else {
            first_try.insert(key, i);
            fresh.push(i);
            None
        };
        outcomes.push(decided);
    }

    if !fresh.is_empty() {
        let mut counts: HashMap<ChatId, i64> = HashMap::new();
        for &i in &fresh {
            *counts.entry(batch[i].chat).or_default() += 1;
        }
        let mut chats: Vec<(ChatId, i64)> = counts.iter().map(|(c, n)| (*c, *n)).collect();
        chats.sort_unstable();
        let (ids, ns): (Vec<ChatId>, Vec<i64>) = chats.into_iter().unzip();
        let lasts: Vec<(ChatId, i64)> = sqlx::query_as(
            "UPDATE conversations c SET last_seq = c.last_seq + v.n \
             FROM unnest($1::bigint[], $2::bigint[]) AS v(id, n) WHERE c.id = v.id \
             RETURNING c.id, c.last_seq",
        )
        .bind(&ids)
        .bind(&ns)
        .fetch_all(&mut *tx)
        .await?;
        // The next seq to hand out per chat: the first of the block just taken.
        let mut next: HashMap<ChatId, i64> = lasts
            .into_iter()
            .map(|(c, last)| (c, last - counts[&c] + 1))
            .collect();
        let mut seqs = Vec::with_capacity(fresh.len());
        for &i in &fresh {
            let seq = next
                .get_mut(&batch[i].chat)
                .expect("every chat's seqs were taken");
            seqs.push(*seq);
            *seq += 1;
        }
        let inserted: Vec<Row> = sqlx::query_as(&format!(
            "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::uuid[], $5::text[]) \
             RETURNING {MESSAGE_COLUMNS}"
        ))
        .bind(fresh.iter().map(|&i| batch[i].chat).collect::<Vec<_>>())
        .bind(&seqs)
        .bind(fresh.iter().map(|&i| batch[i].sender).collect::<Vec<_>>())
        .bind(fresh.iter().map(|&i| batch[i].client_msg_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|&i| batch[i].body.as_str()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        if let Some(node) = announce_as {
            let ranges = bus::ranges_of(inserted.iter().map(|r| (r.chat_id, r.seq)));
            let payloads = bus::encode_ranges(node, &ranges);
            bus::postgres::notify(&mut tx, bus::Channel::Messages, &payloads).await?;
        }
        for m in inserted.into_iter().map(Message::from) {
            let i = first_try[&(m.sender_id, m.client_msg_id)];
            stored.insert((m.sender_id, m.client_msg_id), m.clone());
            outcomes[i] = Some(Outcome::New(m));
        }
    }
    tx.commit().await?;

    let outcomes = outcomes
        .into_iter()
        .zip(batch)
        .map(|(decided, m)| {
            decided.unwrap_or_else(|| match stored.get(&(m.sender, m.client_msg_id)) {
                Some(old) if old.chat_id == m.chat => Outcome::Replay(old.clone()),
                _ => Outcome::Rejected(reused()),
            })
        })
        .collect();
    Ok(Committed { outcomes, members })
}

/// Stored messages in `ranges` (another node's commits), in seq order per chat, with each
/// chat's members: one query.
pub async fn committed(
    conn: &mut PgConnection,
    ranges: &[bus::Range],
) -> AppResult<(Vec<Message>, HashMap<ChatId, Vec<UserId>>)> {
    #[derive(sqlx::FromRow)]
    struct WithMembers {
        #[sqlx(flatten)]
        row: Row,
        members: Option<Vec<UserId>>,
    }
    let rows: Vec<WithMembers> = sqlx::query_as(
        "SELECT m.id, m.conversation_id AS chat_id, m.seq, m.sender_id, m.client_msg_id, m.body, \
         m.created_at, mem.ids AS members \
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS r(chat, lo, hi) \
         CROSS JOIN LATERAL (SELECT array_agg(user_id) AS ids FROM conversation_members \
                             WHERE conversation_id = r.chat) AS mem \
         JOIN messages m ON m.conversation_id = r.chat AND m.seq BETWEEN r.lo AND r.hi \
         ORDER BY m.conversation_id, m.seq",
    )
    .bind(ranges.iter().map(|r| r.chat).collect::<Vec<_>>())
    .bind(ranges.iter().map(|r| r.first).collect::<Vec<_>>())
    .bind(ranges.iter().map(|r| r.last).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    let mut members = HashMap::new();
    let mut messages = Vec::with_capacity(rows.len());
    for r in rows {
        if let Some(ids) = r.members {
            members.entry(r.row.chat_id).or_insert(ids);
        }
        messages.push(Message::from(r.row));
    }
    Ok((messages, members))
}

/// The last seq of each of `chats`.
pub async fn tails(conn: &mut PgConnection, chats: &[ChatId]) -> AppResult<Vec<(ChatId, i64)>> {
    Ok(
        sqlx::query_as("SELECT id, last_seq FROM conversations WHERE id = ANY($1)")
            .bind(chats)
            .fetch_all(conn)
            .await?,
    )
}

/// The last seq of every chat that one of `users` is a member of.
pub async fn tails_of_members(
    conn: &mut PgConnection,
    users: &[UserId],
) -> AppResult<Vec<(ChatId, i64)>> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT c.id, c.last_seq FROM conversation_members m \
         JOIN conversations c ON c.id = m.conversation_id WHERE m.user_id = ANY($1)",
    )
    .bind(users)
    .fetch_all(conn)
    .await?)
}

/// A page of history in seq order: after `after_seq`, or the newest before `before_seq`.
pub async fn page(
    conn: &mut PgConnection,
    chat: ChatId,
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    limit: i64,
) -> AppResult<Vec<Message>> {
    let newest_first = before_seq.is_some() && after_seq.is_none();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 \
         AND seq > $2 AND seq < $3 ORDER BY seq {} LIMIT $4",
        if newest_first { "DESC" } else { "ASC" }
    ))
    .bind(chat)
    .bind(after_seq.unwrap_or(0))
    .bind(before_seq.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let mut messages: Vec<Message> = rows.into_iter().map(Message::from).collect();
    if newest_first {
        messages.reverse();
    }
    Ok(messages)
}

/// A message body must be non-empty text within the configured size.
pub fn check_body(body: &str, max_bytes: usize) -> AppResult<()> {
    crate::validate::text("body", body)?;
    if body.trim().is_empty() {
        return Err(AppError::invalid("body: must not be empty"));
    }
    if body.len() > max_bytes {
        return Err(AppError::invalid(format!(
            "body: at most {max_bytes} bytes"
        )));
    }
    Ok(())
}

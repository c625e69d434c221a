//! Stored messages. Each message takes the next `seq` of its chat in the transaction that stores
//! it, so seqs are gapless and strictly increasing per chat. Sends are stored in batches (group
//! commit) by the hub's persist workers.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::bus;
use crate::error::{is_unique_violation, AppError, AppResult};
use crate::ids::{ChatId, MessageId, UserId};
use crate::protocol::ErrorCode;

pub use crate::protocol::{EntryKind, Message, Reaction};

/// A `messages` row, as the queries read it.
#[derive(sqlx::FromRow)]
pub(super) struct Row {
    id: MessageId,
    chat_id: ChatId,
    seq: i64,
    sender_id: UserId,
    client_msg_id: Uuid,
    body: String,
    created_at: DateTime<Utc>,
    kind: String,
    target_seq: Option<i64>,
    reply_to: Option<i64>,
    edited_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    attachments: Option<Vec<Uuid>>,
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
            kind: EntryKind::parse(&r.kind),
            target: r.target_seq,
            reply_to: r.reply_to,
            edited_at: r.edited_at,
            deleted: r.deleted_at.is_some(),
            attachments: r.attachments.unwrap_or_default(),
            reactions: Vec::new(),
        }
    }
}

/// The columns of [`Row`], of `messages` aliased `m`.
pub(super) const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id AS chat_id, m.seq, m.sender_id, \
     m.client_msg_id, m.body, m.created_at, m.kind, m.target_seq, m.reply_to, m.edited_at, \
     m.deleted_at, m.attachments";

/// One send waiting to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub chat: ChatId,
    pub sender: UserId,
    pub client_msg_id: Uuid,
    pub body: String,
    pub reply_to: Option<i64>,
    /// Boxed, as a send is queued by value and mostly carries none.
    pub attachments: Box<[Uuid]>,
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

/// One row of `xfchat_store_batch`: a send's outcome (with its stored message for `new` and
/// `replay`), or a member of one of the batch's chats.
struct BatchRow {
    ord: Option<i32>,
    outcome: String,
    id: Option<MessageId>,
    chat_id: Option<ChatId>,
    seq: Option<i64>,
    sender_id: Option<UserId>,
    client_msg_id: Option<Uuid>,
    body: Option<String>,
    created_at: Option<DateTime<Utc>>,
    reply_to: Option<i64>,
    attachments: Option<Vec<Uuid>>,
    member_id: Option<UserId>,
}

/// The columns of a [`BatchRow`], in the order [`BatchRow`] reads them.
macro_rules! batch_columns {
    () => {
        "ord, outcome, id, chat_id, seq, sender_id, client_msg_id, body, created_at, reply_to, \
         attachments, member_id"
    };
}
const STORE: &str = concat!(
    "SELECT ",
    batch_columns!(),
    " FROM xfchat_store_batch($1, $2, $3, $4, $5, $6, $7, $8)"
);
const STORE_WITH_HOOKS: &str = concat!(
    "SELECT ",
    batch_columns!(),
    " FROM xfchat_store_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);

/// Read by position, in the order of `batch_columns!`: looking each column up by its name for
/// every row was part of the twentieth of the node's CPU that reading rows cost at 10,000
/// msg/s. Each value's type is still checked, so a column whose type a migration changes is an
/// error, never a value read as another type.
impl sqlx::FromRow<'_, PgRow> for BatchRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            ord: row.try_get(0)?,
            outcome: row.try_get(1)?,
            id: row.try_get(2)?,
            chat_id: row.try_get(3)?,
            seq: row.try_get(4)?,
            sender_id: row.try_get(5)?,
            client_msg_id: row.try_get(6)?,
            body: row.try_get(7)?,
            created_at: row.try_get(8)?,
            reply_to: row.try_get(9)?,
            attachments: row.try_get(10)?,
            member_id: row.try_get(11)?,
        })
    }
}

impl BatchRow {
    fn message(self) -> Option<Message> {
        Some(Message {
            id: self.id?,
            chat_id: self.chat_id?,
            seq: self.seq?,
            sender_id: self.sender_id?,
            client_msg_id: self.client_msg_id?,
            body: self.body?,
            created_at: self.created_at?,
            kind: EntryKind::Message,
            target: None,
            reply_to: self.reply_to,
            edited_at: None,
            deleted: false,
            attachments: self.attachments.unwrap_or_default(),
            reactions: Vec::new(),
        })
    }
}

/// Stores a batch of sends as one group commit in one round trip: the database function
/// `xfchat_store_batch` (migration `store_batch`) locks the batch's chats, reads their members,
/// recognises repeats, takes each chat's seqs and inserts. Called outside a transaction, the
/// statement commits when it returns. Sends to one chat get seqs in batch order. (The function
/// can also notify other nodes inside the commit; it is not asked to, see `bus::publisher`.)
/// With `hooks` (the webhook events configured), the commit writes their outbox rows too.
pub async fn store_batch(
    conn: &mut PgConnection,
    batch: &[NewMessage],
    hooks: Option<&str>,
) -> Result<Committed, sqlx::Error> {
    // Without webhooks, the version that writes no events: the hot path pays nothing for them.
    let sql = match hooks {
        None => STORE,
        Some(_) => STORE_WITH_HOOKS,
    };
    let query = sqlx::query_as(sql)
        .bind(batch.iter().map(|m| m.chat).collect::<Vec<_>>())
        .bind(batch.iter().map(|m| m.sender).collect::<Vec<_>>())
        .bind(batch.iter().map(|m| m.client_msg_id).collect::<Vec<_>>())
        .bind(batch.iter().map(|m| m.body.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|m| m.reply_to).collect::<Vec<_>>())
        .bind(batch.iter().map(joined_attachments).collect::<Vec<_>>())
        .bind(bus::Channel::Messages.name())
        .bind(None::<&str>);
    let query = match hooks {
        None => query,
        Some(h) => query.bind(h),
    };
    let rows: Vec<BatchRow> = query.fetch_all(conn).await?;
    let mut outcomes: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();
    let mut members: HashMap<ChatId, Vec<UserId>> = HashMap::new();
    for mut row in rows {
        if let (Some(chat), Some(user)) = (row.chat_id, row.member_id) {
            members.entry(chat).or_default().push(user);
            continue;
        }
        let Some(i) = row.ord.and_then(|o| usize::try_from(o - 1).ok()) else {
            continue;
        };
        let kind = std::mem::take(&mut row.outcome);
        let outcome = match kind.as_str() {
            "not_found" => Outcome::Rejected(AppError::NotFound),
            "blocked" => Outcome::Rejected(AppError::Forbidden(
                "this direct chat is closed: you are not friends, or one of you blocked the other"
                    .into(),
            )),
            "reused" => Outcome::Rejected(reused()),
            "bad_reply" => Outcome::Rejected(AppError::invalid(
                "reply_to: no message with that seq in this chat",
            )),
            "bad_attachment" => Outcome::Rejected(AppError::invalid(
                "attachments: each must be a finished upload of yours to this chat",
            )),
            kind => match (kind, row.message()) {
                ("new", Some(m)) => Outcome::New(m),
                ("replay", Some(m)) => Outcome::Replay(m),
                _ => {
                    return Err(sqlx::Error::Protocol(format!(
                        "store_batch answered {kind:?}"
                    )))
                }
            },
        };
        if let Some(slot) = outcomes.get_mut(i) {
            *slot = Some(outcome);
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| sqlx::Error::Protocol("store_batch left a send out".into())))
        .collect::<Result<_, _>>()?;
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
    let rows: Vec<WithMembers> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS}, mem.ids AS members \
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS r(chat, lo, hi) \
         CROSS JOIN LATERAL (SELECT array_agg(user_id) AS ids FROM conversation_members \
                             WHERE conversation_id = r.chat) AS mem \
         JOIN messages m ON m.conversation_id = r.chat AND m.seq BETWEEN r.lo AND r.hi \
         ORDER BY m.conversation_id, m.seq"
    ))
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
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1 \
         AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq {} LIMIT $4",
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

/// The newest message (not entry) of each of `chats` that has one: a backward probe of each
/// chat's index.
pub async fn last_messages(
    conn: &mut PgConnection,
    chats: &[ChatId],
) -> AppResult<HashMap<ChatId, Message>> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT l.* FROM unnest($1::bigint[]) AS c(id) CROSS JOIN LATERAL ( \
             SELECT {MESSAGE_COLUMNS} FROM messages m \
             WHERE m.conversation_id = c.id AND m.kind = 'message' \
             ORDER BY m.seq DESC LIMIT 1) l"
    ))
    .bind(chats)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.chat_id, Message::from(r)))
        .collect())
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

/// Most attachments on one message.
pub const MAX_ATTACHMENTS: usize = 10;

/// A send's attachments, as the store takes them: joined by commas, or empty.
fn joined_attachments(m: &NewMessage) -> String {
    let ids: Vec<String> = m.attachments.iter().map(Uuid::to_string).collect();
    ids.join(",")
}

/// A send's text and attachments: the text as [`check_body`] says, except that a message with
/// attachments may have none; at most [`MAX_ATTACHMENTS`], each once.
pub fn check_send(body: &str, attachments: &[Uuid], max_bytes: usize) -> AppResult<()> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(AppError::invalid(format!(
            "attachments: at most {MAX_ATTACHMENTS}"
        )));
    }
    let unique: std::collections::HashSet<&Uuid> = attachments.iter().collect();
    if unique.len() != attachments.len() {
        return Err(AppError::invalid("attachments: each at most once"));
    }
    if attachments.is_empty() || !body.is_empty() {
        return check_body(body, max_bytes);
    }
    Ok(())
}

/// A reply names an earlier message by its seq; whether the chat has it is the store's check.
pub fn check_reply(reply_to: Option<i64>) -> AppResult<()> {
    match reply_to {
        Some(seq) if seq < 1 => Err(AppError::invalid("reply_to: a seq, at least 1")),
        _ => Ok(()),
    }
}

/// One page of a socket's stream: the chat's last seq and up to `limit` messages after
/// `after_seq`, read in one snapshot with the membership of `user`; None when `user` is not a
/// member (never was, left, or was removed), so a stream stops at a removal whatever its state.
pub async fn stream_page(
    conn: &mut PgConnection,
    user: UserId,
    chat: ChatId,
    after_seq: i64,
    limit: i64,
) -> AppResult<Option<(i64, Vec<Message>)>> {
    // The chat's row and the member's, then the page; a member with no messages after
    // `after_seq` gets one row without a message.
    #[derive(sqlx::FromRow)]
    struct PageRow {
        last_seq: i64,
        id: Option<MessageId>,
        seq: Option<i64>,
        sender_id: Option<UserId>,
        client_msg_id: Option<Uuid>,
        body: Option<String>,
        created_at: Option<DateTime<Utc>>,
        kind: Option<String>,
        target_seq: Option<i64>,
        reply_to: Option<i64>,
        edited_at: Option<DateTime<Utc>>,
        deleted_at: Option<DateTime<Utc>>,
        attachments: Option<Vec<Uuid>>,
    }
    let rows: Vec<PageRow> = sqlx::query_as(&format!(
        "SELECT c.last_seq, {} \
         FROM conversations c \
         JOIN conversation_members cm ON cm.conversation_id = c.id AND cm.user_id = $2 \
         LEFT JOIN LATERAL (SELECT * FROM messages WHERE conversation_id = c.id AND seq > $3 \
                            ORDER BY seq LIMIT $4) m ON true \
         WHERE c.id = $1 ORDER BY m.seq",
        MESSAGE_COLUMNS.replace("m.conversation_id AS chat_id, ", "")
    ))
    .bind(chat)
    .bind(user)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let Some(last_seq) = rows.first().map(|r| r.last_seq) else {
        return Ok(None);
    };
    let messages = rows
        .into_iter()
        .filter_map(|r| {
            Some(Message::from(Row {
                id: r.id?,
                chat_id: chat,
                seq: r.seq?,
                sender_id: r.sender_id?,
                client_msg_id: r.client_msg_id?,
                body: r.body?,
                created_at: r.created_at?,
                kind: r.kind?,
                target_seq: r.target_seq,
                reply_to: r.reply_to,
                edited_at: r.edited_at,
                deleted_at: r.deleted_at,
                attachments: r.attachments,
            }))
        })
        .collect();
    Ok(Some((last_seq, messages)))
}

/// `chat`'s last seq if `user` is a member of it.
pub async fn member_last_seq(
    conn: &mut PgConnection,
    user: UserId,
    chat: ChatId,
) -> AppResult<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT c.last_seq FROM conversations c \
         JOIN conversation_members cm ON cm.conversation_id = c.id AND cm.user_id = $2 \
         WHERE c.id = $1",
    )
    .bind(chat)
    .bind(user)
    .fetch_optional(conn)
    .await?)
}

/// Of `chats`, those `user` is a member of, with their last seqs: one query for a whole
/// `resume`.
pub async fn member_tails(
    conn: &mut PgConnection,
    user: UserId,
    chats: &[ChatId],
) -> AppResult<Vec<(ChatId, i64, Option<i64>)>> {
    Ok(sqlx::query_as(
        "SELECT c.id, c.last_seq, c.rewound_to FROM conversations c \
         JOIN conversation_members cm ON cm.conversation_id = c.id AND cm.user_id = $2 \
         WHERE c.id = ANY($1)",
    )
    .bind(chats)
    .bind(user)
    .fetch_all(conn)
    .await?)
}

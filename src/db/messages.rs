//! Stored messages. Each message takes the next `seq` of its chat in the transaction that
//! stores it, so seqs are gapless and strictly increasing per chat.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Acquire, PgConnection};
use uuid::Uuid;

use super::chats;
use crate::error::{is_unique_violation, AppError, AppResult};
use crate::ids::{ChatId, MessageId, UserId};

/// A message as the HTTP API and the WebSocket frames carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Message {
    pub id: MessageId,
    pub chat_id: ChatId,
    pub seq: i64,
    pub sender_id: UserId,
    pub client_msg_id: Uuid,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

const MESSAGE_COLUMNS: &str =
    "id, conversation_id AS chat_id, seq, sender_id, client_msg_id, body, created_at";

/// Whether a send stored a new message or found the one an earlier try stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    Replay,
}

/// Looks up an earlier send of `client_msg_id` by `sender`. It must have gone to the same chat:
/// a client_msg_id names one message.
async fn earlier_send(
    conn: &mut PgConnection,
    chat: ChatId,
    sender: UserId,
    client_msg_id: Uuid,
) -> AppResult<Option<Message>> {
    let found: Option<Message> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = $1 AND client_msg_id = $2"
    ))
    .bind(sender)
    .bind(client_msg_id)
    .fetch_optional(conn)
    .await?;
    match found {
        Some(m) if m.chat_id != chat => Err(AppError::conflict(
            "client_msg_id_reused",
            "client_msg_id was already used for a message in another chat",
        )),
        other => Ok(other),
    }
}

/// Stores one message in its own transaction, or returns the stored one for a retried send.
pub async fn store(
    conn: &mut PgConnection,
    chat: ChatId,
    sender: UserId,
    client_msg_id: Uuid,
    body: &str,
) -> AppResult<(Message, Stored)> {
    if let Some(m) = earlier_send(conn, chat, sender, client_msg_id).await? {
        return Ok((m, Stored::Replay));
    }
    let mut tx = conn.begin().await?;
    chats::ensure_member(&mut tx, chat, sender).await?;
    let seq: i64 = sqlx::query_scalar(
        "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
    )
    .bind(chat)
    .fetch_one(&mut *tx)
    .await?;
    let inserted = sqlx::query_as(&format!(
        "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {MESSAGE_COLUMNS}"
    ))
    .bind(chat)
    .bind(seq)
    .bind(sender)
    .bind(client_msg_id)
    .bind(body)
    .fetch_one(&mut *tx)
    .await;
    match inserted {
        Ok(message) => {
            tx.commit().await?;
            Ok((message, Stored::New))
        }
        // A concurrent try of the same send committed first; answer with its message.
        Err(err) if is_unique_violation(&err, "messages_sender_client_msg_id") => {
            tx.rollback().await?;
            let m = earlier_send(conn, chat, sender, client_msg_id).await?;
            m.map(|m| (m, Stored::Replay))
                .ok_or(AppError::Internal(err.into()))
        }
        Err(err) => Err(err.into()),
    }
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
    let mut messages: Vec<Message> = sqlx::query_as(&format!(
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
    if newest_first {
        messages.reverse();
    }
    Ok(messages)
}

//! The webhook outbox (migration `integrations`): events written in the commit of the message
//! they describe, taken a batch at a time by whichever node's deliverer gets there first.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::ids::{ChatId, MessageId, UserId};

/// An event taken for delivery, with its message.
#[derive(Debug, sqlx::FromRow)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub recipient_id: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
    pub message_id: MessageId,
    pub chat_id: ChatId,
    pub seq: i64,
    pub sender_id: UserId,
    pub body: String,
    pub sent_at: DateTime<Utc>,
    pub reply_to: Option<i64>,
    pub deleted: bool,
}

/// Takes up to `limit` due events, oldest first, for `lease`: no other deliverer takes them
/// until it ends, so with several nodes each goes out once; one whose deliverer died with them
/// is taken again when the lease ends. Rows another deliverer holds locked are skipped.
pub async fn claim(
    conn: &mut PgConnection,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(
        "WITH claimed AS (
             UPDATE webhook_events e
             SET due_at = now() + make_interval(secs => $2), attempts = e.attempts + 1
             WHERE e.id IN (SELECT w.id FROM webhook_events w WHERE w.due_at <= now()
                            ORDER BY w.due_at, w.id LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING e.id, e.kind, e.recipient_id, e.created_at, e.attempts, e.message_id)
         SELECT c.id, c.kind, c.recipient_id, c.created_at, c.attempts, c.message_id,
                m.conversation_id AS chat_id, m.seq, m.sender_id, m.body,
                m.created_at AS sent_at, m.reply_to, m.deleted_at IS NOT NULL AS deleted
         FROM claimed c JOIN messages m ON m.id = c.message_id
         ORDER BY c.id",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(conn)
    .await
}

/// The receiver took `ids`: they leave the outbox.
pub async fn delivered(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM webhook_events WHERE id = ANY ($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// The receiver did not take `ids`: they are due again after `backoff`, with why.
pub async fn retry(
    conn: &mut PgConnection,
    ids: &[i64],
    backoff: Duration,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_events SET due_at = now() + make_interval(secs => $2), last_error = $3
         WHERE id = ANY ($1)",
    )
    .bind(ids)
    .bind(backoff.as_secs_f64())
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many events wait, and for how long the oldest has.
pub async fn backlog(conn: &mut PgConnection) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at))::float8, 0)
         FROM webhook_events",
    )
    .fetch_one(conn)
    .await
}

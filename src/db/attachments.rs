//! Attachments (migration `attachments`): a row per file, its bytes in chunks written as the
//! upload streams in, each chunk by its own short statement, so a slow upload holds no
//! connection between chunks.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::AppResult;
use crate::ids::{ChatId, UserId};

/// Bytes per stored chunk.
pub const CHUNK: usize = 256 * 1024;

/// An attachment as clients see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attachment {
    pub id: Uuid,
    pub chat_id: ChatId,
    pub content_type: String,
    pub filename: Option<String>,
    pub size: i64,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "a.id, a.conversation_id AS chat_id, a.content_type, a.filename, a.size, a.created_at";

/// Starts an upload by `uploader` to `chat`; None when they are not a member.
pub async fn start(
    conn: &mut PgConnection,
    chat: ChatId,
    uploader: UserId,
    content_type: &str,
    filename: Option<&str>,
) -> AppResult<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO attachments (conversation_id, uploader_id, content_type, filename) \
         SELECT $1, $2, $3, $4 WHERE EXISTS ( \
             SELECT 1 FROM conversation_members WHERE conversation_id = $1 AND user_id = $2) \
         RETURNING id",
    )
    .bind(chat)
    .bind(uploader)
    .bind(content_type)
    .bind(filename)
    .fetch_optional(conn)
    .await?)
}

/// The bytes `user` uploaded in the last 24 hours.
pub async fn uploaded_today(conn: &mut PgConnection, user: UserId) -> AppResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(size), 0)::bigint FROM attachments \
         WHERE uploader_id = $1 AND created_at > now() - interval '1 day'",
    )
    .bind(user)
    .fetch_one(conn)
    .await?)
}

/// Stores chunk `n` of upload `id`.
pub async fn put_chunk(conn: &mut PgConnection, id: Uuid, n: i32, data: &[u8]) -> AppResult<()> {
    sqlx::query("INSERT INTO attachment_chunks (attachment_id, n, data) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(n)
        .bind(data)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks upload `id` complete at `size` bytes; answers it.
pub async fn finish(conn: &mut PgConnection, id: Uuid, size: i64) -> AppResult<Attachment> {
    Ok(sqlx::query_as(&format!(
        "UPDATE attachments a SET complete = true, size = $2 WHERE a.id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(size)
    .fetch_one(conn)
    .await?)
}

/// Drops an upload that will not be finished.
pub async fn abandon(conn: &mut PgConnection, id: Uuid) -> AppResult<()> {
    sqlx::query("DELETE FROM attachments WHERE id = $1 AND NOT complete")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Attachment `id` with how many chunks it has, if `reader` is a member of its chat now.
pub async fn for_member(
    conn: &mut PgConnection,
    id: Uuid,
    reader: UserId,
) -> AppResult<Option<(Attachment, i32)>> {
    #[derive(sqlx::FromRow)]
    struct WithChunks {
        #[sqlx(flatten)]
        attachment: Attachment,
        chunks: i64,
    }
    let row: Option<WithChunks> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, (SELECT count(*) FROM attachment_chunks c WHERE c.attachment_id = a.id) \
                AS chunks \
         FROM attachments a \
         JOIN conversation_members m ON m.conversation_id = a.conversation_id AND m.user_id = $2 \
         WHERE a.id = $1 AND a.complete"
    ))
    .bind(id)
    .bind(reader)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.attachment, r.chunks as i32)))
}

/// Chunk `n` of attachment `id`.
pub async fn chunk(conn: &mut PgConnection, id: Uuid, n: i32) -> AppResult<Vec<u8>> {
    Ok(
        sqlx::query_scalar(
            "SELECT data FROM attachment_chunks WHERE attachment_id = $1 AND n = $2",
        )
        .bind(id)
        .bind(n)
        .fetch_one(conn)
        .await?,
    )
}

/// Drops uploads left unfinished for a day (a client that went away mid-upload, a crash).
pub async fn sweep(conn: &mut PgConnection) -> AppResult<u64> {
    Ok(sqlx::query(
        "DELETE FROM attachments WHERE NOT complete AND created_at < now() - interval '1 day'",
    )
    .execute(conn)
    .await?
    .rows_affected())
}

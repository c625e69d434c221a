//! Accounts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Acquire, PgConnection};

use crate::error::{is_unique_violation, AppError, AppResult};
use crate::ids::{ChatId, UserId};
use crate::protocol::ErrorCode;

/// An account as every client sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

pub const USER_COLUMNS: &str = "id, username, display_name, created_at";

pub async fn create(
    conn: &mut PgConnection,
    username: &str,
    display_name: &str,
    password_hash: &str,
) -> AppResult<User> {
    sqlx::query_as(&format!(
        "INSERT INTO users (username, display_name, password_hash) VALUES ($1, $2, $3) \
         RETURNING {USER_COLUMNS}"
    ))
    .bind(username)
    .bind(display_name)
    .bind(password_hash)
    .fetch_one(conn)
    .await
    .map_err(|err| {
        if is_unique_violation(&err, "users_username_key") {
            AppError::conflict(ErrorCode::UsernameTaken, "that username is taken")
        } else {
            err.into()
        }
    })
}

/// The user and their password hash, for login.
pub async fn find_for_login(
    conn: &mut PgConnection,
    username: &str,
) -> AppResult<Option<(User, String)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: User,
        password_hash: String,
    }
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users \
         WHERE lower(username) = lower($1) AND deleted_at IS NULL"
    ))
    .bind(username)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.user, r.password_hash)))
}

pub async fn by_id(conn: &mut PgConnection, id: UserId) -> AppResult<Option<User>> {
    Ok(
        sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

pub async fn by_username(conn: &mut PgConnection, username: &str) -> AppResult<Option<User>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE lower(username) = lower($1) AND deleted_at IS NULL"
    ))
    .bind(username)
    .fetch_optional(conn)
    .await?)
}

pub async fn set_password(
    conn: &mut PgConnection,
    id: UserId,
    password_hash: &str,
) -> AppResult<()> {
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .bind(password_hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes account `id`: its row stays (its messages keep their sender) with its name freed and
/// no password; its friendships, requests and blocks go, and it leaves every group. Returns the
/// groups it left. Direct chats stay as they are, closed to new messages (no friendship).
pub async fn delete(conn: &mut PgConnection, id: UserId) -> AppResult<Vec<ChatId>> {
    let mut tx = conn.begin().await?;
    let gone = sqlx::query(
        "UPDATE users SET username = '#deleted-' || id, display_name = 'Deleted account', \
             password_hash = '', deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if gone.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    for query in [
        "DELETE FROM friendships WHERE user_low = $1 OR user_high = $1",
        "DELETE FROM friend_requests WHERE from_user_id = $1 OR to_user_id = $1",
        "DELETE FROM blocks WHERE blocker_id = $1 OR blocked_id = $1",
    ] {
        sqlx::query(query).bind(id).execute(&mut *tx).await?;
    }
    // Each group's row is locked, in id order, as every membership change and group commit
    // locks it: nothing committed after this reaches the deleted account.
    let groups: Vec<ChatId> = sqlx::query_scalar(
        "SELECT c.id FROM conversations c JOIN conversation_members m ON m.conversation_id = c.id \
         WHERE m.user_id = $1 AND c.kind = 'group' ORDER BY c.id FOR NO KEY UPDATE OF c",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM conversation_members WHERE user_id = $1 AND conversation_id = ANY($2)",
    )
    .bind(id)
    .bind(&groups)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(groups)
}

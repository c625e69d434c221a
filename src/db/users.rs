//! Accounts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::{is_unique_violation, AppError, AppResult};
use crate::ids::UserId;
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
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE lower(username) = lower($1)"
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
        "SELECT {USER_COLUMNS} FROM users WHERE lower(username) = lower($1)"
    ))
    .bind(username)
    .fetch_optional(conn)
    .await?)
}

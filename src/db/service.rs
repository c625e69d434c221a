//! What the app's backend does with the service key, and the users of the app's own tokens
//! (migration `integrations`).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::ids::{ChatId, MessageId, UserId};
use crate::protocol::{ErrorCode, Message};

/// The sender of the messages the service posts.
pub const SYSTEM: UserId = UserId(0);

#[derive(sqlx::FromRow)]
struct PostRow {
    outcome: Option<String>,
    id: Option<MessageId>,
    seq: Option<i64>,
    body: Option<String>,
    created_at: Option<DateTime<Utc>>,
    member_id: Option<UserId>,
}

/// A system message, stored or found stored by an earlier try, with the chat's members.
pub struct Posted {
    pub message: Message,
    pub new: bool,
    pub members: Vec<UserId>,
}

/// Stores a message from the system in `chat` (its next seq, its webhook events with `hooks`);
/// a repeat of `client_msg_id` answers the message stored the first time.
pub async fn post_system(
    conn: &mut PgConnection,
    chat: ChatId,
    client_msg_id: Uuid,
    body: &str,
    hooks: Option<&str>,
) -> AppResult<Posted> {
    let rows: Vec<PostRow> = sqlx::query_as(
        "SELECT outcome, id, seq, body, created_at, member_id FROM xfchat_post_system($1, $2, $3, $4)",
    )
    .bind(chat)
    .bind(client_msg_id)
    .bind(body)
    .bind(hooks)
    .fetch_all(conn)
    .await?;
    let mut rows = rows.into_iter();
    let first = rows.next().ok_or(AppError::NotFound)?;
    let new = match first.outcome.as_deref() {
        Some("new") => true,
        Some("replay") => false,
        Some("reused") => {
            return Err(AppError::conflict(
                ErrorCode::ClientMsgIdReused,
                "client_msg_id was already used for a message in another chat",
            ))
        }
        other => {
            return Err(AppError::Internal(anyhow::anyhow!(
                "xfchat_post_system answered {other:?}"
            )))
        }
    };
    let missing = || AppError::Internal(anyhow::anyhow!("xfchat_post_system left out the message"));
    let message = Message {
        id: first.id.ok_or_else(missing)?,
        chat_id: chat,
        seq: first.seq.ok_or_else(missing)?,
        sender_id: SYSTEM,
        client_msg_id,
        body: first.body.ok_or_else(missing)?,
        created_at: first.created_at.ok_or_else(missing)?,
        ..Default::default()
    };
    let members = rows.filter_map(|r| r.member_id).collect();
    Ok(Posted {
        message,
        new,
        members,
    })
}

/// Creates a group chat of `members` with `title`, made by `creator` (the system when None).
/// Run it in a transaction.
pub async fn create_group(
    conn: &mut PgConnection,
    creator: Option<UserId>,
    title: &str,
    members: &[UserId],
    max_members: i64,
) -> AppResult<ChatId> {
    if let Some(c) = creator {
        check_users(conn, "creator_id", &[c]).await?;
    }
    let mut ids: Vec<UserId> = members.to_vec();
    ids.sort_unstable();
    ids.dedup();
    check_users(conn, "member_ids", &ids).await?;
    ids.extend(creator.filter(|c| !ids.contains(c)));
    if ids.is_empty() {
        return Err(AppError::invalid(
            "member_ids: a group needs a member (or a creator_id)",
        ));
    }
    if ids.len() as i64 > max_members {
        return Err(super::chats::group_full(max_members));
    }
    let id: ChatId = sqlx::query_scalar(
        "INSERT INTO conversations (kind, title, created_by) VALUES ('group', $1, $2) RETURNING id",
    )
    .bind(title)
    .bind(creator.unwrap_or(SYSTEM))
    .fetch_one(&mut *conn)
    .await?;
    super::chats::add_members(conn, id, &ids).await?;
    Ok(id)
}

/// A display name made of a subject: without control characters, trimmed, at most 64
/// characters; `user` when nothing is left.
pub fn display_of(subject: &str) -> String {
    let clean: String = subject.chars().filter(|c| !c.is_control()).collect();
    let name: String = clean.trim().chars().take(64).collect();
    let name = name.trim_end().to_owned();
    if name.is_empty() {
        "user".to_owned()
    } else {
        name
    }
}

/// 400 naming `field` unless every one of `ids` is an account that exists.
pub async fn check_users(conn: &mut PgConnection, field: &str, ids: &[UserId]) -> AppResult<()> {
    let found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE id = ANY ($1) AND id <> 0 AND deleted_at IS NULL",
    )
    .bind(ids)
    .fetch_one(conn)
    .await?;
    if found != ids.len() as i64 {
        return Err(AppError::invalid(format!("{field}: every user must exist")));
    }
    Ok(())
}

/// The user of the app's id `subject`, created on first use with `name` as display name (the
/// subject when None); a later `name` replaces the display name.
pub async fn external_user(
    conn: &mut PgConnection,
    subject: &str,
    name: Option<&str>,
) -> AppResult<UserId> {
    let fallback = display_of(subject);
    let display = name.unwrap_or(&fallback);
    let found: Option<(UserId, String)> = sqlx::query_as(
        "SELECT u.id, u.display_name FROM external_users e JOIN users u ON u.id = e.user_id \
         WHERE e.subject = $1 AND u.deleted_at IS NULL",
    )
    .bind(subject)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((id, current)) = found {
        if name.is_some_and(|n| n != current) {
            sqlx::query("UPDATE users SET display_name = $2 WHERE id = $1")
                .bind(id)
                .bind(display)
                .execute(&mut *conn)
                .await?;
        }
        return Ok(id);
    }
    // A deleted account stays deleted: the subject starts afresh.
    sqlx::query("DELETE FROM external_users WHERE subject = $1")
        .bind(subject)
        .execute(&mut *conn)
        .await?;
    // A username signup and login refuse (':'), unique per subject (a deleted account frees its username).
    let digest = Sha256::digest(subject.as_bytes());
    let username = format!("ext:{}", &hex::encode(digest)[..24]);
    let id: Option<UserId> = sqlx::query_scalar(
        "WITH u AS (INSERT INTO users (username, display_name, password_hash) \
                    VALUES ($2, $3, '!') RETURNING id), \
              e AS (INSERT INTO external_users (subject, user_id) SELECT $1, id FROM u \
                    ON CONFLICT (subject) DO NOTHING RETURNING user_id) \
         SELECT user_id FROM e",
    )
    .bind(subject)
    .bind(&username)
    .bind(display)
    .fetch_optional(&mut *conn)
    .await
    .or_else(|err| {
        // Another request created it at the same moment: the username is taken.
        if crate::error::is_unique_violation(&err, "users_username_key") {
            Ok(None)
        } else {
            Err(err)
        }
    })?;
    match id {
        Some(id) => Ok(id),
        None => sqlx::query_scalar("SELECT user_id FROM external_users WHERE subject = $1")
            .bind(subject)
            .fetch_optional(conn)
            .await?
            .ok_or(AppError::Unavailable),
    }
}

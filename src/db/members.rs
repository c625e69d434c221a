//! Changes to who is in a group chat: joining (added by a member), leaving and removal by the
//! chat's creator. Each change first locks the chat's row, the lock every group commit of that
//! chat takes before it reads the members, so a message committed after a change is fanned out
//! to the members after it, never to someone already removed.

use sqlx::PgConnection;

use super::chats::Kind;
use super::{blocks, friends};
use crate::error::{AppError, AppResult};
use crate::ids::{ChatId, UserId};
use crate::protocol::ErrorCode;

/// Locks `chat` for a membership change, checking that `user` is a member of this group chat.
/// Returns the chat's creator. Run it in a transaction.
async fn lock_group(conn: &mut PgConnection, chat: ChatId, user: UserId) -> AppResult<UserId> {
    let row: Option<(Kind, UserId, bool)> = sqlx::query_as(
        "SELECT c.kind, c.created_by, EXISTS (SELECT 1 FROM conversation_members m \
             WHERE m.conversation_id = c.id AND m.user_id = $2) \
         FROM conversations c WHERE c.id = $1 FOR NO KEY UPDATE",
    )
    .bind(chat)
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some((Kind::Group, creator, true)) => Ok(creator),
        Some((Kind::Direct, _, true)) => Err(AppError::conflict(
            ErrorCode::NotAGroup,
            "a direct chat has no membership to change",
        )),
        _ => Err(AppError::NotFound),
    }
}

/// Locks group chat `chat` for a membership change by the service, which needs no membership.
pub async fn lock_for_service(conn: &mut PgConnection, chat: ChatId) -> AppResult<()> {
    let kind: Option<Kind> =
        sqlx::query_scalar("SELECT kind FROM conversations WHERE id = $1 FOR NO KEY UPDATE")
            .bind(chat)
            .fetch_optional(&mut *conn)
            .await?;
    match kind {
        Some(Kind::Group) => Ok(()),
        Some(Kind::Direct) => Err(AppError::conflict(
            ErrorCode::NotAGroup,
            "a direct chat has no membership to change",
        )),
        None => Err(AppError::NotFound),
    }
}

/// `user` leaves `chat`. Run it in a transaction.
pub async fn leave(conn: &mut PgConnection, chat: ChatId, user: UserId) -> AppResult<()> {
    lock_group(conn, chat, user).await?;
    delete(conn, chat, user).await
}

/// The creator of `chat` removes `user` from it. Run it in a transaction.
pub async fn remove(
    conn: &mut PgConnection,
    chat: ChatId,
    by: UserId,
    user: UserId,
) -> AppResult<()> {
    let creator = lock_group(conn, chat, by).await?;
    if creator != by {
        return Err(AppError::Forbidden(
            "only the chat's creator can remove members".into(),
        ));
    }
    delete(conn, chat, user).await
}

/// Takes `user` out of `chat`, whose row the caller locked; 404 when not a member.
pub async fn delete(conn: &mut PgConnection, chat: ChatId, user: UserId) -> AppResult<()> {
    let gone =
        sqlx::query("DELETE FROM conversation_members WHERE conversation_id = $1 AND user_id = $2")
            .bind(chat)
            .bind(user)
            .execute(conn)
            .await?;
    if gone.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    Ok(())
}

/// A member of `chat` adds `users`, each of whom must be their friend; those already in it are
/// left as they are. Returns the users added. Run it in a transaction.
pub async fn add(
    conn: &mut PgConnection,
    chat: ChatId,
    by: UserId,
    users: &[UserId],
    max_members: i64,
) -> AppResult<Vec<UserId>> {
    lock_group(conn, chat, by).await?;
    let mut ids: Vec<UserId> = users.iter().copied().filter(|&u| u != by).collect();
    ids.sort_unstable();
    ids.dedup();
    if friends::count_friends_among(conn, by, &ids).await? != ids.len() as i64 {
        return Err(AppError::Forbidden(
            "user_ids: every new member must be your friend".into(),
        ));
    }
    if blocks::any_between(conn, by, &ids).await? {
        return Err(AppError::Forbidden(
            "user_ids: a block stands between you".into(),
        ));
    }
    insert(conn, chat, &ids, max_members).await
}

/// Puts `ids` into `chat`, whose row the caller locked, within the group's cap; those already
/// in it are left as they are. Returns the users added. Run it in a transaction.
pub async fn insert(
    conn: &mut PgConnection,
    chat: ChatId,
    ids: &[UserId],
    max_members: i64,
) -> AppResult<Vec<UserId>> {
    let added: Vec<UserId> = sqlx::query_scalar(
        "INSERT INTO conversation_members (conversation_id, user_id) \
         SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING RETURNING user_id",
    )
    .bind(chat)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    // The chat's row is locked: the count is the group's size when this commits.
    let size: i64 =
        sqlx::query_scalar("SELECT count(*) FROM conversation_members WHERE conversation_id = $1")
            .bind(chat)
            .fetch_one(conn)
            .await?;
    if size > max_members {
        return Err(super::chats::group_full(max_members));
    }
    Ok(added)
}

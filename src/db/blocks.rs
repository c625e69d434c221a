//! Blocks: a user who blocks another no longer hears from them. The block ends their friendship
//! and any pending request between them; while it stands neither can befriend the other, start a
//! direct chat with the other, or send in the direct chat they already share.

use sqlx::PgConnection;

use super::friends;
use crate::error::{AppError, AppResult};
use crate::ids::UserId;

/// `blocker` blocks `blocked`. Run it in a transaction.
pub async fn block(conn: &mut PgConnection, blocker: UserId, blocked: UserId) -> AppResult<()> {
    if blocker == blocked {
        return Err(AppError::invalid("user_id: you cannot block yourself"));
    }
    sqlx::query(
        "INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(blocker)
    .bind(blocked)
    .execute(&mut *conn)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(ref db) if db.is_foreign_key_violation() => AppError::NotFound,
        other => other.into(),
    })?;
    match friends::remove(conn, blocker, blocked).await {
        Ok(()) | Err(AppError::NotFound) => {}
        Err(e) => return Err(e),
    }
    sqlx::query(
        "UPDATE friend_requests SET status = 'declined', updated_at = now() WHERE status = 'pending' \
         AND ((from_user_id = $1 AND to_user_id = $2) OR (from_user_id = $2 AND to_user_id = $1))",
    )
    .bind(blocker)
    .bind(blocked)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn unblock(conn: &mut PgConnection, blocker: UserId, blocked: UserId) -> AppResult<()> {
    let gone = sqlx::query("DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2")
        .bind(blocker)
        .bind(blocked)
        .execute(conn)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    Ok(())
}

/// True when `user` blocked any of `others` or any of them blocked `user`.
pub async fn any_between(
    conn: &mut PgConnection,
    user: UserId,
    others: &[UserId],
) -> AppResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM blocks WHERE (blocker_id = $1 AND blocked_id = ANY($2)) \
         OR (blocked_id = $1 AND blocker_id = ANY($2)))",
    )
    .bind(user)
    .bind(others)
    .fetch_one(conn)
    .await?)
}

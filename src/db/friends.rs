//! Friend requests and friendships. A friendship is stored once, smaller user id first.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::users::User;
use crate::error::{is_unique_violation, AppError, AppResult};
use crate::ids::{RequestId, UserId};
use crate::protocol::ErrorCode;

pub use crate::protocol::wire::{FriendRequest, RequestStatus};

/// `friend_request_status` as PostgreSQL stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "friend_request_status", rename_all = "lowercase")]
enum Status {
    Pending,
    Accepted,
    Declined,
    Cancelled,
}

/// A friend request row, as the queries read it.
#[derive(sqlx::FromRow)]
struct Row {
    id: RequestId,
    from_user_id: UserId,
    from_username: String,
    to_user_id: UserId,
    to_username: String,
    status: Status,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for FriendRequest {
    fn from(r: Row) -> Self {
        FriendRequest {
            id: r.id,
            from_user_id: r.from_user_id,
            from_username: r.from_username,
            to_user_id: r.to_user_id,
            to_username: r.to_username,
            status: match r.status {
                Status::Pending => RequestStatus::Pending,
                Status::Accepted => RequestStatus::Accepted,
                Status::Declined => RequestStatus::Declined,
                Status::Cancelled => RequestStatus::Cancelled,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// What the recipient or the sender does with a pending request.
#[derive(Debug, Clone, Copy)]
pub enum Response {
    Accept,
    Decline,
    Cancel,
}

const REQUEST_SELECT: &str = "SELECT r.id, r.from_user_id, f.username AS from_username, \
     r.to_user_id, t.username AS to_username, r.status, r.created_at, r.updated_at \
     FROM friend_requests r JOIN users f ON f.id = r.from_user_id JOIN users t ON t.id = r.to_user_id";

fn pair(a: UserId, b: UserId) -> (UserId, UserId) {
    if a < b {
        (a, b)
    } else {
        (b, a)
    }
}

pub async fn are_friends(conn: &mut PgConnection, a: UserId, b: UserId) -> AppResult<bool> {
    let (low, high) = pair(a, b);
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM friendships WHERE user_low = $1 AND user_high = $2)",
    )
    .bind(low)
    .bind(high)
    .fetch_one(conn)
    .await?)
}

/// How many of `others` are friends of `user`.
pub async fn count_friends_among(
    conn: &mut PgConnection,
    user: UserId,
    others: &[UserId],
) -> AppResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM friendships \
         WHERE (user_low = $1 AND user_high = ANY($2)) OR (user_high = $1 AND user_low = ANY($2))",
    )
    .bind(user)
    .bind(others)
    .fetch_one(conn)
    .await?)
}

async fn request_by_id(conn: &mut PgConnection, id: RequestId) -> AppResult<FriendRequest> {
    let row: Row = sqlx::query_as(&format!("{REQUEST_SELECT} WHERE r.id = $1"))
        .bind(id)
        .fetch_one(conn)
        .await?;
    Ok(row.into())
}

/// Sends a friend request; refused while `to` declined `from`'s last one less than `cooldown`
/// ago, so that a declined request cannot be repeated at once.
pub async fn send_request(
    conn: &mut PgConnection,
    from: UserId,
    to: UserId,
    cooldown: std::time::Duration,
) -> AppResult<FriendRequest> {
    if from == to {
        return Err(AppError::invalid("username: you cannot befriend yourself"));
    }
    if super::blocks::any_between(conn, from, &[to]).await? {
        return Err(AppError::Forbidden(
            "you cannot send a friend request to this user".into(),
        ));
    }
    if are_friends(conn, from, to).await? {
        return Err(AppError::conflict(
            ErrorCode::AlreadyFriends,
            "you are already friends",
        ));
    }
    let wait: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(updated_at) + make_interval(secs => $3) - now())::float8 \
         FROM friend_requests WHERE from_user_id = $1 AND to_user_id = $2 AND status = 'declined'",
    )
    .bind(from)
    .bind(to)
    .bind(cooldown.as_secs_f64())
    .fetch_one(&mut *conn)
    .await?;
    if let Some(wait) = wait.filter(|w| *w > 0.0) {
        return Err(AppError::conflict(
            ErrorCode::RequestDeclined,
            format!(
                "they declined your last request; you can ask again in {} hours",
                (wait / 3600.0).ceil()
            ),
        ));
    }
    let id: RequestId = sqlx::query_scalar(
        "INSERT INTO friend_requests (from_user_id, to_user_id) VALUES ($1, $2) RETURNING id",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&mut *conn)
    .await
    .map_err(|err| {
        if is_unique_violation(&err, "friend_requests_one_pending_per_pair") {
            AppError::conflict(
                ErrorCode::RequestPending,
                "a friend request between you is already pending",
            )
        } else {
            err.into()
        }
    })?;
    request_by_id(conn, id).await
}

/// Pending requests addressed to `user` and sent by `user`.
pub async fn pending(
    conn: &mut PgConnection,
    user: UserId,
) -> AppResult<(Vec<FriendRequest>, Vec<FriendRequest>)> {
    let incoming: Vec<Row> = sqlx::query_as(&format!(
        "{REQUEST_SELECT} WHERE r.to_user_id = $1 AND r.status = 'pending' ORDER BY r.id"
    ))
    .bind(user)
    .fetch_all(&mut *conn)
    .await?;
    let outgoing: Vec<Row> = sqlx::query_as(&format!(
        "{REQUEST_SELECT} WHERE r.from_user_id = $1 AND r.status = 'pending' ORDER BY r.id"
    ))
    .bind(user)
    .fetch_all(conn)
    .await?;
    let wire = |rows: Vec<Row>| rows.into_iter().map(FriendRequest::from).collect();
    Ok((wire(incoming), wire(outgoing)))
}

/// Accepts, declines or cancels a pending request. Only the recipient accepts or declines and
/// only the sender cancels; anyone else is told the request does not exist. Run it in a
/// transaction: accepting also creates the friendship.
pub async fn respond(
    conn: &mut PgConnection,
    user: UserId,
    id: RequestId,
    response: Response,
) -> AppResult<FriendRequest> {
    let row: Option<(UserId, UserId, Status)> = sqlx::query_as(
        "SELECT from_user_id, to_user_id, status FROM friend_requests WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let (from, to, status) = row.ok_or(AppError::NotFound)?;
    let allowed = match response {
        Response::Accept | Response::Decline => to == user,
        Response::Cancel => from == user,
    };
    if !allowed {
        return Err(if from == user || to == user {
            AppError::Forbidden(
                "only the recipient accepts or declines; only the sender cancels".into(),
            )
        } else {
            AppError::NotFound
        });
    }
    if status != Status::Pending {
        return Err(AppError::conflict(
            ErrorCode::RequestNotPending,
            "the request is no longer pending",
        ));
    }
    let new_status = match response {
        Response::Accept => Status::Accepted,
        Response::Decline => Status::Declined,
        Response::Cancel => Status::Cancelled,
    };
    sqlx::query("UPDATE friend_requests SET status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(new_status)
        .execute(&mut *conn)
        .await?;
    if let Response::Accept = response {
        let (low, high) = pair(from, to);
        sqlx::query(
            "INSERT INTO friendships (user_low, user_high) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(low)
        .bind(high)
        .execute(&mut *conn)
        .await?;
    }
    request_by_id(conn, id).await
}

/// A friend with their presence: `online` and when they were `last_seen_at` (both as if
/// offline, without a time, when they hide it).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Friend {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub user: User,
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
}

pub async fn list(conn: &mut PgConnection, user: UserId) -> AppResult<Vec<Friend>> {
    Ok(sqlx::query_as(&format!(
        "SELECT u.id, u.username, u.display_name, u.created_at, {} FROM friendships f \
         JOIN users u ON u.id = CASE WHEN f.user_low = $1 THEN f.user_high ELSE f.user_low END \
         WHERE f.user_low = $1 OR f.user_high = $1 ORDER BY u.username",
        super::presence::columns(2)
    ))
    .bind(user)
    .bind(super::presence::STALE_AFTER_SECS)
    .fetch_all(conn)
    .await?)
}

/// Ends a friendship; `NotFound` when there was none.
pub async fn remove(conn: &mut PgConnection, user: UserId, other: UserId) -> AppResult<()> {
    let (low, high) = pair(user, other);
    let done = sqlx::query("DELETE FROM friendships WHERE user_low = $1 AND user_high = $2")
        .bind(low)
        .bind(high)
        .execute(conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    Ok(())
}

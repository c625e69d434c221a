//! Who is online (migration `presence`): a row per user and server instance with a socket open
//! there, kept by each instance's presence task (`hub::presence`). A row counts while its
//! instance renewed `instances.seen_at` within [`STALE_AFTER_SECS`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::AppResult;
use crate::ids::UserId;

/// An instance silent for this long counts for nobody; its rows are swept.
pub const STALE_AFTER_SECS: f64 = 30.0;

/// A user's presence as their friends see it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Change {
    pub user_id: UserId,
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// SQL: whether user `u` has a socket on a live instance.
const LIVE: &str = "EXISTS (SELECT 1 FROM presence p JOIN instances i ON i.id = p.instance \
     WHERE p.user_id = u.id AND i.seen_at > now() - make_interval(secs => $9))";

/// Renews `instance`, creating it on first use.
pub async fn beat(conn: &mut PgConnection, instance: Uuid) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO instances (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET seen_at = now()",
    )
    .bind(instance)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that `online` have a socket on `instance` now and `offline` no longer; answers
/// whose presence changed for everyone (their first socket anywhere, or their last), users who
/// hide it left out.
pub async fn apply(
    conn: &mut PgConnection,
    instance: Uuid,
    online: &[UserId],
    offline: &[UserId],
) -> AppResult<Vec<Change>> {
    Ok(sqlx::query_as(
        "WITH ins AS (
             INSERT INTO presence (user_id, instance) SELECT u, $1 FROM unnest($2::bigint[]) u
             ON CONFLICT DO NOTHING RETURNING user_id),
         del AS (
             DELETE FROM presence WHERE instance = $1 AND user_id = ANY($3) RETURNING user_id),
         elsewhere AS (
             SELECT DISTINCT p.user_id FROM presence p JOIN instances i ON i.id = p.instance
             WHERE p.user_id IN (SELECT user_id FROM ins UNION SELECT user_id FROM del)
               AND p.instance <> $1 AND i.seen_at > now() - make_interval(secs => $4)),
         gone AS (
             UPDATE users u SET last_seen_at = now() FROM del
             WHERE u.id = del.user_id AND del.user_id NOT IN (SELECT user_id FROM elsewhere)
             RETURNING u.id, u.last_seen_at, u.presence_hidden)
         SELECT u.id AS user_id, true AS online, NULL::timestamptz AS last_seen_at
         FROM ins JOIN users u ON u.id = ins.user_id
         WHERE ins.user_id NOT IN (SELECT user_id FROM elsewhere) AND NOT u.presence_hidden
         UNION ALL
         SELECT id, false, last_seen_at FROM gone WHERE NOT presence_hidden",
    )
    .bind(instance)
    .bind(online)
    .bind(offline)
    .bind(STALE_AFTER_SECS)
    .fetch_all(conn)
    .await?)
}

/// Of this instance's rows, the users not in `here` (gone while an update was lost), and of
/// `here`, those without a row: what [`apply`] must be told to agree with the sockets.
pub async fn drift(
    conn: &mut PgConnection,
    instance: Uuid,
    here: &[UserId],
) -> AppResult<(Vec<UserId>, Vec<UserId>)> {
    let rows: Vec<(UserId, bool)> = sqlx::query_as(
        "SELECT p.user_id, false FROM presence p
         WHERE p.instance = $1 AND NOT (p.user_id = ANY($2))
         UNION ALL
         SELECT h.u, true FROM unnest($2::bigint[]) h(u)
         WHERE NOT EXISTS (SELECT 1 FROM presence p WHERE p.instance = $1 AND p.user_id = h.u)",
    )
    .bind(instance)
    .bind(here)
    .fetch_all(conn)
    .await?;
    let (missing, extra): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, m)| *m);
    Ok((
        missing.into_iter().map(|(u, _)| u).collect(),
        extra.into_iter().map(|(u, _)| u).collect(),
    ))
}

/// Removes instances silent for [`STALE_AFTER_SECS`] (crashed) with their rows; answers the
/// users who are now offline everywhere, last seen when their instance was.
pub async fn sweep(conn: &mut PgConnection) -> AppResult<Vec<Change>> {
    Ok(sqlx::query_as(
        "WITH stale AS (
             SELECT id, seen_at FROM instances
             WHERE seen_at < now() - make_interval(secs => $1) FOR UPDATE SKIP LOCKED),
         gone AS (
             DELETE FROM presence p USING stale s WHERE p.instance = s.id
             RETURNING p.user_id, s.seen_at),
         dropped AS (DELETE FROM instances i USING stale s WHERE i.id = s.id),
         offline AS (
             SELECT g.user_id, max(g.seen_at) AS at FROM gone g
             WHERE NOT EXISTS (
                 SELECT 1 FROM presence p JOIN instances i ON i.id = p.instance
                 WHERE p.user_id = g.user_id AND i.seen_at >= now() - make_interval(secs => $1)
                   AND i.id NOT IN (SELECT id FROM stale))
             GROUP BY g.user_id),
         marked AS (
             UPDATE users u SET last_seen_at = greatest(u.last_seen_at, o.at) FROM offline o
             WHERE u.id = o.user_id RETURNING u.id, u.last_seen_at, u.presence_hidden)
         SELECT id AS user_id, false AS online, last_seen_at FROM marked WHERE NOT presence_hidden",
    )
    .bind(STALE_AFTER_SECS)
    .fetch_all(conn)
    .await?)
}

/// Each of `users`' friends who may see their presence (no block either way).
pub async fn audiences(
    conn: &mut PgConnection,
    users: &[UserId],
) -> AppResult<HashMap<UserId, Vec<UserId>>> {
    let pairs: Vec<(UserId, UserId)> = sqlx::query_as(
        "SELECT s.u, CASE WHEN f.user_low = s.u THEN f.user_high ELSE f.user_low END
         FROM unnest($1::bigint[]) s(u)
         JOIN friendships f ON f.user_low = s.u OR f.user_high = s.u
         WHERE NOT EXISTS (
             SELECT 1 FROM blocks b
             WHERE (b.blocker_id = f.user_low AND b.blocked_id = f.user_high)
                OR (b.blocker_id = f.user_high AND b.blocked_id = f.user_low))",
    )
    .bind(users)
    .fetch_all(conn)
    .await?;
    let mut out: HashMap<UserId, Vec<UserId>> = HashMap::new();
    for (user, friend) in pairs {
        out.entry(user).or_default().push(friend);
    }
    Ok(out)
}

/// `user`'s presence as friends see it now, and whether they hide it.
pub async fn of(conn: &mut PgConnection, user: UserId) -> AppResult<(Change, bool)> {
    let (online, last_seen_at, hidden): (bool, Option<DateTime<Utc>>, bool) =
        sqlx::query_as(&format!(
            "SELECT NOT u.presence_hidden AND {}, \
                    CASE WHEN u.presence_hidden THEN NULL ELSE u.last_seen_at END, \
                    u.presence_hidden FROM users u WHERE u.id = $1",
            LIVE.replace("$9", "$2")
        ))
        .bind(user)
        .bind(STALE_AFTER_SECS)
        .fetch_one(conn)
        .await?;
    Ok((
        Change {
            user_id: user,
            online,
            last_seen_at,
        },
        hidden,
    ))
}

/// Shows or hides `user`'s presence.
pub async fn set_hidden(conn: &mut PgConnection, user: UserId, hidden: bool) -> AppResult<()> {
    sqlx::query("UPDATE users SET presence_hidden = $2 WHERE id = $1")
        .bind(user)
        .bind(hidden)
        .execute(conn)
        .await?;
    Ok(())
}

/// The SQL columns `online, last_seen_at` of user `u` as a friend sees them, with the age
/// limit as parameter `$n`.
pub fn columns(n: usize) -> String {
    format!(
        "NOT u.presence_hidden AND {} AS online, \
         CASE WHEN u.presence_hidden THEN NULL ELSE u.last_seen_at END AS last_seen_at",
        LIVE.replace("$9", &format!("${n}"))
    )
}

//! Sessions and their refresh tokens, and the single-use tickets that open sockets.
//!
//! A refresh token is `<session id>.<secret>`; only SHA-256 of the secret is stored (the secret
//! is 32 random bytes, so a slow hash would add nothing). Each refresh rotates it. The token it
//! replaced, shown again later than [`RACE`] after the rotation, was copied: the session ends.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::Session;
use crate::error::{AppError, AppResult};
use crate::ids::UserId;

/// Sessions one account holds at most; a new login beyond it ends the oldest.
pub const MAX_PER_USER: i64 = 50;

/// A superseded refresh token shown this soon after its rotation is a race between two tabs of
/// one browser, not a copy: it is refused without ending the session.
const RACE: Duration = Duration::from_secs(30);

/// How long a socket ticket can be used.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// A secret and the hash that is stored of it.
fn secret() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let text = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&text);
    (text, hash)
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn interval(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A new session of `user` living `ttl` past its last refresh; returns its id, its refresh token
/// and the ids of the oldest sessions it pushed out beyond [`MAX_PER_USER`] (to revoke).
pub async fn create(
    conn: &mut PgConnection,
    user: UserId,
    ttl: Duration,
) -> AppResult<(Uuid, String, Vec<Uuid>)> {
    let sid = Uuid::new_v4();
    let (secret, hash) = secret();
    let pushed_out: Vec<Uuid> = sqlx::query_scalar(
        "WITH created AS (INSERT INTO sessions (id, user_id, refresh_hash, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))) \
         DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE user_id = $2 \
             ORDER BY refreshed_at DESC OFFSET $5) RETURNING id",
    )
    .bind(sid)
    .bind(user)
    .bind(hash)
    .bind(interval(ttl))
    // The new row is not visible to the DELETE's snapshot: keep one fewer of the others.
    .bind(MAX_PER_USER - 1)
    .fetch_all(conn)
    .await?;
    Ok((sid, format!("{sid}.{secret}"), pushed_out))
}

/// What showing a refresh token led to.
pub enum Refreshed {
    /// The session goes on with this new refresh token.
    Rotated {
        user: UserId,
        sid: Uuid,
        token: String,
    },
    /// A superseded token was shown: the session was ended and must be revoked.
    Replayed { user: UserId, sid: Uuid },
    /// Unknown, expired, malformed or raced: refused, nothing changed.
    Refused,
}

/// Rotates the refresh token `token`, keeping its session alive for `ttl` more.
pub async fn refresh(conn: &mut PgConnection, token: &str, ttl: Duration) -> AppResult<Refreshed> {
    let Some((sid, shown)) = token
        .split_once('.')
        .and_then(|(sid, secret)| Some((sid.parse::<Uuid>().ok()?, hash(secret))))
    else {
        return Ok(Refreshed::Refused);
    };
    let (secret, next) = secret();
    let rotated: Option<UserId> = sqlx::query_scalar(
        "UPDATE sessions SET retired_hash = refresh_hash, refresh_hash = $3, \
             refreshed_at = now(), expires_at = now() + make_interval(secs => $4) \
         WHERE id = $1 AND refresh_hash = $2 AND expires_at > now() RETURNING user_id",
    )
    .bind(sid)
    .bind(&shown)
    .bind(next)
    .bind(interval(ttl))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(user) = rotated {
        return Ok(Refreshed::Rotated {
            user,
            sid,
            token: format!("{sid}.{secret}"),
        });
    }
    let replayed: Option<UserId> = sqlx::query_scalar(
        "DELETE FROM sessions WHERE id = $1 AND retired_hash = $2 \
             AND refreshed_at < now() - make_interval(secs => $3) RETURNING user_id",
    )
    .bind(sid)
    .bind(&shown)
    .bind(interval(RACE))
    .fetch_optional(conn)
    .await?;
    Ok(match replayed {
        Some(user) => Refreshed::Replayed { user, sid },
        None => Refreshed::Refused,
    })
}

/// Ends session `sid` of `user`; true if it was open.
pub async fn end(conn: &mut PgConnection, user: UserId, sid: Uuid) -> AppResult<bool> {
    let gone = sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_id = $2")
        .bind(sid)
        .bind(user)
        .execute(conn)
        .await?;
    Ok(gone.rows_affected() > 0)
}

/// Ends every session of `user` but `keep`; returns the ids ended.
pub async fn end_all(
    conn: &mut PgConnection,
    user: UserId,
    keep: Option<Uuid>,
) -> AppResult<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "DELETE FROM sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2 RETURNING id",
    )
    .bind(user)
    .bind(keep)
    .fetch_all(conn)
    .await?)
}

/// A single-use ticket that opens a socket as `session` for [`TICKET_TTL`].
pub async fn ticket(conn: &mut PgConnection, session: &Session) -> AppResult<String> {
    let (secret, hash) = secret();
    sqlx::query(
        "INSERT INTO ws_tickets (hash, user_id, session_id, token_id, token_expires_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
    )
    .bind(hash)
    .bind(session.user)
    .bind(session.sid)
    .bind(session.jti)
    .bind(session.expires_at())
    .bind(interval(TICKET_TTL))
    .execute(conn)
    .await?;
    Ok(secret)
}

/// Uses up `ticket`: the session it opens a socket as, or `Unauthorized`.
pub async fn redeem(conn: &mut PgConnection, ticket: &str) -> AppResult<Session> {
    let row: Option<(UserId, Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "DELETE FROM ws_tickets WHERE hash = $1 AND expires_at > now() \
         RETURNING user_id, session_id, token_id, token_expires_at",
    )
    .bind(hash(ticket))
    .fetch_optional(conn)
    .await?;
    let (user, sid, jti, expires) = row.ok_or(AppError::Unauthorized("invalid ticket"))?;
    Ok(Session {
        user,
        jti,
        sid,
        expires: expires.timestamp().max(0) as u64,
        // A ticket was issued for a token that was valid then; the tickets of a user whose
        // tokens are revoked go with them.
        issued: jsonwebtoken::get_current_timestamp(),
    })
}

/// Forgets sessions and tickets that can no longer be used.
pub async fn sweep(conn: &mut PgConnection) -> AppResult<()> {
    sqlx::query("DELETE FROM ws_tickets WHERE expires_at < now()")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE expires_at < now()")
        .execute(conn)
        .await?;
    Ok(())
}

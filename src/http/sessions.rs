//! Sessions: opening one at login, refreshing its short-lived access token, tickets that open a
//! socket without a token in the URL, and ending one session or all of them.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{AppState, ClientIp, Json};
use crate::auth::{external_session, legacy_session, Session};
use crate::db::sessions::{self, Refreshed, TICKET_TTL};
use crate::db::users::User;
use crate::db::Op;
use crate::error::{AppError, AppResult};
use crate::ids::UserId;

/// Opens a session for `user`: the answer to a signup or login.
pub async fn open(state: &AppState, conn: &mut PgConnection, user: User) -> AppResult<Value> {
    let (sid, refresh_token, pushed_out) =
        sessions::create(conn, user.id, state.config.refresh_ttl).await?;
    revoke(state, conn, user.id, &pushed_out).await?;
    let token = state.tokens.issue(user.id, sid)?;
    Ok(json!({
        "user": user,
        "token": token,
        "refresh_token": refresh_token,
        "expires_in": state.tokens.ttl().as_secs(),
    }))
}

/// Revokes the access tokens of sessions `sids` of `user` and closes their sockets, here and,
/// through the revocation list, on every node.
pub async fn revoke(
    state: &AppState,
    conn: &mut PgConnection,
    user: UserId,
    sids: &[Uuid],
) -> AppResult<()> {
    if sids.is_empty() {
        return Ok(());
    }
    // No access token of these sessions outlives this.
    let until = Utc::now() + state.tokens.ttl();
    state
        .tokens
        .revoked()
        .revoke_all(conn, user, sids, until)
        .await?;
    for sid in sids {
        state.hub.revoke(user, *sid);
    }
    Ok(())
}

/// Ends every session of `user` but `keep`, and the tokens issued before sessions existed.
pub async fn end_all(
    state: &AppState,
    conn: &mut PgConnection,
    user: UserId,
    keep: Option<Uuid>,
) -> AppResult<()> {
    let ended = sessions::end_all(conn, user, keep).await?;
    revoke(state, conn, user, &ended).await?;
    let legacy = legacy_session(user);
    if keep != Some(legacy) {
        // Those tokens were issued for up to a day.
        let until = Utc::now() + state.tokens.ttl().max(Duration::from_secs(86_400));
        state
            .tokens
            .revoked()
            .revoke(conn, user, legacy, until)
            .await?;
        state.hub.revoke(user, legacy);
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// `POST /api/auth/refresh`: a new access token and the next refresh token.
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<RefreshRequest>,
) -> AppResult<axum::Json<Value>> {
    state.throttles.refresh(ip)?;
    let mut conn = state.db.conn(Op::Accounts).await?;
    match sessions::refresh(&mut conn, &req.refresh_token, state.config.refresh_ttl).await? {
        Refreshed::Rotated { user, sid, token } => {
            conn.done().await?;
            Ok(axum::Json(json!({
                "token": state.tokens.issue(user, sid)?,
                "refresh_token": token,
                "expires_in": state.tokens.ttl().as_secs(),
            })))
        }
        Refreshed::Replayed { user, sid } => {
            tracing::info!(%user, "a superseded refresh token was shown; its session ended");
            revoke(&state, &mut conn, user, &[sid]).await?;
            conn.done().await?;
            Err(AppError::Unauthorized("invalid refresh token"))
        }
        Refreshed::Refused => Err(AppError::Unauthorized("invalid refresh token")),
    }
}

/// `POST /api/auth/ws-ticket`: a single-use ticket that opens a socket as this token, for
/// browsers, so that no token appears in a URL.
pub async fn ws_ticket(
    State(state): State<AppState>,
    session: Session,
) -> AppResult<axum::Json<Value>> {
    state.throttles.user_action(session.user)?;
    let mut conn = state.db.conn(Op::Accounts).await?;
    let ticket = sessions::ticket(&mut conn, &session).await?;
    conn.done().await?;
    Ok(axum::Json(
        json!({ "ticket": ticket, "expires_in": TICKET_TTL.as_secs() }),
    ))
}

/// `POST /api/auth/logout`: ends this token's session (its refresh token included) and closes
/// its sockets.
pub async fn logout(State(state): State<AppState>, session: Session) -> AppResult<StatusCode> {
    let mut conn = state.db.conn(Op::Accounts).await?;
    state
        .tokens
        .revoked()
        .revoke(&mut conn, session.user, session.jti, session.expires_at())
        .await?;
    state.hub.revoke(session.user, session.jti);
    if sessions::end(&mut conn, session.user, session.sid).await? {
        revoke(&state, &mut conn, session.user, &[session.sid]).await?;
    }
    conn.done().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/auth/logout-all`: ends every session of the account, this one included.
pub async fn logout_all(State(state): State<AppState>, session: Session) -> AppResult<StatusCode> {
    let mut conn = state.db.conn(Op::Accounts).await?;
    end_all(&state, &mut conn, session.user, None).await?;
    // The app's own tokens have no session: every one issued to the user so far is refused.
    if session.sid == external_session(session.user) {
        state
            .tokens
            .revoked()
            .revoke_issued_before(&mut conn, session.user, Utc::now())
            .await?;
        state.hub.revoke(session.user, session.sid);
    }
    conn.done().await?;
    Ok(StatusCode::NO_CONTENT)
}

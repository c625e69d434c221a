//! `GET /ws`: authenticates and negotiates the codec before the upgrade; the hub admits the
//! socket within its limits and serves it.
//!
//! Browsers open sockets with a single-use `ticket` (from `POST /api/auth/ws-ticket`), so that
//! no token is written into a URL that proxies log; other clients may send the token as a
//! bearer header (or, for older clients, `?token=`). No URI is logged. A browser socket whose
//! `Origin` is neither the server's own nor in `XFCHAT_WS_ALLOWED_ORIGINS` is refused, so a
//! page elsewhere cannot open sockets with a visitor's ticket or token.

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;

use super::auth::bearer_token;
use super::extract::Query;
use super::{AppState, ClientIp};
use crate::auth::Session;
use crate::db::{sessions, Op};
use crate::error::{AppError, AppResult};
use crate::hub::handshake::Handshake;
use crate::hub::refused;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    ticket: Option<String>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<WsQuery>,
    req: Request,
) -> AppResult<Response> {
    let (mut parts, _body) = req.into_parts();
    check_origin(&parts, &state.config.ws.allowed_origins).inspect_err(|_| refused("origin"))?;
    let session = authenticate(&state, &parts, query).await.inspect_err(|e| {
        if matches!(e, AppError::Unauthorized(_)) {
            refused("unauthorized")
        }
    })?;
    let Handshake {
        codec,
        response,
        on_upgrade,
    } = Handshake::new(&mut parts)?;
    let admitted = state.hub.admit(session, ip, codec)?;
    state.hub.serve(admitted, on_upgrade);
    Ok(response)
}

/// The session a socket opens as: a ticket's, or a token's.
async fn authenticate(state: &AppState, parts: &Parts, query: WsQuery) -> AppResult<Session> {
    if let Some(ticket) = query.ticket {
        let mut conn = state.db.conn(Op::Accounts).await?;
        let session = sessions::redeem(&mut conn, &ticket).await?;
        conn.done().await?;
        // Its token or session may have been revoked since the ticket was issued.
        return if state.tokens.is_revoked(&session) {
            Err(AppError::Unauthorized("token revoked"))
        } else {
            Ok(session)
        };
    }
    let token = bearer_token(parts)
        .map(str::to_owned)
        .or(query.token)
        .ok_or(AppError::Unauthorized("missing bearer token"))?;
    super::auth::authenticate(state, &token).await
}

/// A browser's socket comes from the server's own origin or an allowed one; a client that
/// sends no `Origin` is not a browser and is let through.
fn check_origin(parts: &Parts, allowed: &[String]) -> AppResult<()> {
    let Some(origin) = parts.headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let own = origin
        .split_once("://")
        .is_some_and(|(_, authority)| !host.is_empty() && authority == host);
    if own || allowed.contains(&origin) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "this origin may not open sockets here".into(),
        ))
    }
}

//! `GET /ws`: authenticates and negotiates the codec before the upgrade; the hub admits the
//! socket within its limits and serves it.
//! The token may come in the query string (browsers cannot set headers); no URI is logged.

use axum::extract::{Request, State};
use axum::response::Response;
use serde::Deserialize;

use super::auth::bearer_token;
use super::extract::Query;
use super::{AppState, ClientIp};
use crate::error::{AppError, AppResult};
use crate::hub::handshake::Handshake;
use crate::hub::refused;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<WsQuery>,
    req: Request,
) -> AppResult<Response> {
    let (mut parts, _body) = req.into_parts();
    let token = bearer_token(&parts)
        .map(str::to_owned)
        .or(query.token)
        .ok_or(AppError::Unauthorized("missing bearer token"))
        .inspect_err(|_| refused("unauthorized"))?;
    let session = state
        .tokens
        .verify(&token)
        .inspect_err(|_| refused("unauthorized"))?;
    let Handshake {
        codec,
        response,
        on_upgrade,
    } = Handshake::new(&mut parts)?;
    let admitted = state.hub.admit(session, ip, codec)?;
    state.hub.serve(admitted, on_upgrade);
    Ok(response)
}

//! `GET /ws`: authenticates, checks connection limits and negotiates the codec before the
//! upgrade, then hands the upgraded connection to tokio-tungstenite and a connection task.
//! The token may come in the query string (browsers cannot set headers); no URI is logged.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::extract::Query;
use super::AppState;
use crate::auth::bearer_token;
use crate::error::{AppError, AppResult};
use crate::hub::registry::Refused;
use crate::hub::Connection;
use crate::protocol::Codec;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

fn refused(reason: &'static str) {
    metrics::counter!(crate::metrics::WS_REFUSED, "reason" => reason).increment(1);
}

pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    req: Request,
) -> AppResult<Response> {
    let (mut parts, _body) = req.into_parts();
    let token = bearer_token(&parts)
        .map(str::to_owned)
        .or(query.token)
        .ok_or(AppError::Unauthorized("missing bearer token"))
        .inspect_err(|_| refused("unauthorized"))?;
    let user = state
        .tokens
        .verify(&token)
        .inspect_err(|_| refused("unauthorized"))?;

    let headers = &parts.headers;
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let is_upgrade = header_has(headers, header::CONNECTION, "upgrade")
        && header_has(headers, header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| is_upgrade) else {
        return Err(AppError::invalid(
            "expected a WebSocket upgrade (version 13)",
        ));
    };
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    let codec = Codec::negotiate(offered).ok_or_else(|| {
        AppError::invalid(format!(
            "unsupported subprotocol; offer {} or {}",
            Codec::JSON_PROTOCOL,
            Codec::MSGPACK_PROTOCOL
        ))
    })?;
    let on_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| AppError::invalid("this connection cannot be upgraded"))?;
    let hub = state.hub.clone();
    if hub.shutdown.is_cancelled() {
        return Err(AppError::Unavailable);
    }
    let inbox = hub
        .registry
        .register(
            user,
            hub.ws.queue_frames,
            hub.ws.max_connections,
            hub.ws.max_per_user,
        )
        .map_err(|why| match why {
            Refused::ServerFull => {
                refused("server_full");
                AppError::Overloaded
            }
            Refused::UserFull => {
                refused("user_full");
                AppError::TooManyConnections(format!(
                    "at most {} open sockets per user",
                    hub.ws.max_per_user
                ))
            }
        })?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(hub.ws.max_frame_bytes))
        .max_frame_size(Some(hub.ws.max_frame_bytes));
    let task_hub = hub.clone();
    hub.connections.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                Connection::new(task_hub, user, codec, socket, inbox)
                    .run()
                    .await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                task_hub.registry.unregister(user, inbox.id);
            }
        }
    });

    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = derive_accept_key(key.as_bytes());
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header"),
    );
    if offered.is_some() {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(codec.protocol()),
        );
    }
    Ok(response)
}

//! `GET /ws`: authenticates, checks connection limits and negotiates the codec before the
//! upgrade, then hands the socket to a connection task.
//! The token may come in the query string (browsers cannot set headers); no URI is logged.

use axum::extract::{Request, State};
use axum::response::Response;
use serde::Deserialize;

use super::extract::Query;
use super::handshake::{self, Handshake};
use super::{AppState, ClientIp};
use crate::auth::bearer_token;
use crate::error::{AppError, AppResult};
use crate::hub::registry::{Caps, QueueCaps, Refused};
use crate::hub::Connection;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

fn refused(reason: &'static str) {
    metrics::counter!(crate::metrics::WS_REFUSED, "reason" => reason).increment(1);
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
    let hub = state.hub.clone();
    if hub.shutdown.is_cancelled() {
        return Err(AppError::Unavailable);
    }
    let inbox = hub
        .registry
        .register(
            session,
            ip,
            codec,
            QueueCaps {
                frames: hub.ws.queue_frames,
                bytes: hub.ws.queue_bytes,
            },
            Caps {
                total: hub.ws.max_connections,
                per_user: hub.ws.max_per_user,
                per_ip: hub.ws.max_per_ip,
            },
        )
        .map_err(|why| match why {
            Refused::ServerFull => {
                refused("server_full");
                AppError::Overloaded
            }
            Refused::AddressFull => {
                refused("address_full");
                AppError::TooManyConnections(format!(
                    "at most {} open sockets per client address",
                    hub.ws.max_per_ip
                ))
            }
            Refused::UserFull => {
                refused("user_full");
                AppError::TooManyConnections(format!(
                    "at most {} open sockets per user",
                    hub.ws.max_per_user
                ))
            }
        })?;
    let task_hub = hub.clone();
    let max_frame = hub.ws.max_frame_bytes;
    hub.connections.spawn(async move {
        match handshake::socket(on_upgrade, max_frame).await {
            Ok(socket) => {
                Connection::new(task_hub, session, codec, socket, inbox)
                    .run()
                    .await
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                task_hub
                    .registry
                    .unregister(session.user, inbox.ip, inbox.id);
            }
        }
    });
    Ok(response)
}

//! The WebSocket handshake on hyper: validates an upgrade request, negotiates the codec and
//! prepares the 101 answer; once hyper hands over the connection, tokio-tungstenite speaks
//! WebSocket on it. Shared by the server and the harness's no-database baseline.

use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::Socket;
use crate::error::{AppError, AppResult};
use crate::protocol::Codec;

/// An accepted upgrade: the codec, the 101 response to send, and the connection to come.
pub struct Handshake {
    pub codec: Codec,
    pub response: Response,
    pub on_upgrade: OnUpgrade,
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

impl Handshake {
    pub fn new(parts: &mut Parts) -> AppResult<Handshake> {
        let headers = &parts.headers;
        let is_upgrade = header_has(headers, header::CONNECTION, "upgrade")
            && header_has(headers, header::UPGRADE, "websocket")
            && headers
                .get(header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13");
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|_| is_upgrade);
        let key =
            key.ok_or_else(|| AppError::invalid("expected a WebSocket upgrade (version 13)"))?;
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
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| AppError::invalid("this connection cannot be upgraded"))?;
        Ok(Handshake {
            codec,
            response,
            on_upgrade,
        })
    }
}

/// Waits for hyper to hand over the upgraded connection and wraps it as a WebSocket.
pub async fn socket(on_upgrade: OnUpgrade, max_frame_bytes: usize) -> hyper::Result<Socket> {
    let upgraded = on_upgrade.await?;
    // tungstenite reads into a 128 KiB buffer by default, which dominated the memory of an idle
    // socket, and keeps it for the socket's life. 1 KiB holds a few typical frames per read; a
    // larger frame grows it to the frame's length, read in one call once its header is in.
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes));
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await)
}

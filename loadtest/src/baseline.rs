//! `xfchat-baseline`: the no-database reference for the hub's fan-out path. It speaks just
//! enough of XFChat's API for the harness (signup, friend requests, group chats, history and
//! `/ws` send/ack/message) with everything in memory: no PostgreSQL, no password hashing, no
//! auth beyond a user id in the token. Built from the same pieces as the server (hyper's upgrade,
//! tokio-tungstenite, the shared frames and codecs, encode once per codec), so the benchmark's
//! ratio measures what the database and the hub's bookkeeping cost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use xfchat::db::messages::Message;
use xfchat::hub::handshake::{self, Handshake};
use xfchat::ids::{ChatId, MessageId, UserId};
use xfchat::protocol::{ClientFrame, Codec, Encoded, ServerFrame};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
}

#[derive(Default)]
struct Baseline {
    next_id: AtomicI64,
    chats: DashMap<i64, Arc<Chat>>,
    sockets: DashMap<i64, Vec<(u64, Outbox)>>,
}

/// A socket's queue of frames to write.
type Outbox = mpsc::Sender<Arc<Encoded>>;

#[derive(Default)]
struct Chat {
    members: Vec<i64>,
    /// Held while a message takes its seq and is queued, so every socket gets seq order.
    log: Mutex<Vec<Message>>,
}

type Shared = Arc<Baseline>;

fn user_of(req: &axum::http::request::Parts, query: &HashMap<String, String>) -> Option<i64> {
    let header = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .or(query.get("token").map(String::as_str))?;
    token.strip_prefix('u')?.parse().ok()
}

async fn signup(State(b): State<Shared>) -> (axum::http::StatusCode, Json<Value>) {
    let id = b.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    (
        axum::http::StatusCode::CREATED,
        Json(json!({ "user": { "id": id }, "token": format!("u{id}") })),
    )
}

async fn friend_request(State(b): State<Shared>) -> (axum::http::StatusCode, Json<Value>) {
    let id = b.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    (
        axum::http::StatusCode::CREATED,
        Json(json!({ "request": { "id": id } })),
    )
}

async fn accept() -> Json<Value> {
    Json(json!({}))
}

async fn create_chat(
    State(b): State<Shared>,
    req: Request,
) -> (axum::http::StatusCode, Json<Value>) {
    let (parts, body) = req.into_parts();
    let creator = user_of(&parts, &HashMap::new()).unwrap_or(0);
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut members: Vec<i64> = v["member_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect();
    members.push(creator);
    members.sort_unstable();
    members.dedup();
    let id = b.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    b.chats.insert(
        id,
        Arc::new(Chat {
            members,
            log: Mutex::new(Vec::new()),
        }),
    );
    (
        axum::http::StatusCode::CREATED,
        Json(json!({ "chat": { "id": id } })),
    )
}

async fn history(
    State(b): State<Shared>,
    Path(chat): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let after: i64 = q.get("after_seq").and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|s| s.parse().ok()).unwrap_or(50);
    let page: Vec<Message> = match b.chats.get(&chat).map(|c| c.clone()) {
        Some(c) => c
            .log
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|m| m.seq > after)
            .take(limit)
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    Json(json!({ "messages": page }))
}

async fn ws(
    State(b): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (mut parts, _) = req.into_parts();
    let Some(user) = user_of(&parts, &q) else {
        return axum::http::StatusCode::UNAUTHORIZED.into_response();
    };
    let Ok(Handshake {
        codec,
        response,
        on_upgrade,
    }) = Handshake::new(&mut parts)
    else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    let conn = b.next_id.fetch_add(1, Ordering::Relaxed) as u64;
    let (tx, rx) = mpsc::channel(4096);
    b.sockets.entry(user).or_default().push((conn, tx));
    tokio::spawn(async move {
        if let Ok(socket) = handshake::socket(on_upgrade, 64 * 1024).await {
            serve(b.clone(), user, conn, codec, socket, rx).await;
        }
        if let Some(mut v) = b.sockets.get_mut(&user) {
            v.retain(|(c, _)| *c != conn);
        }
    });
    response
}

async fn serve(
    b: Shared,
    user: i64,
    conn: u64,
    codec: Codec,
    mut socket: xfchat::hub::Socket,
    mut rx: mpsc::Receiver<Arc<Encoded>>,
) {
    loop {
        tokio::select! {
            out = rx.recv() => {
                // Like the hub: write what is waiting (up to 64 frames), then flush once.
                let Some(first) = out else { return };
                let mut next = Some(first);
                let mut written = 0;
                while let Some(frame) = next.take() {
                    if socket.feed(frame.message(codec)).await.is_err() {
                        return;
                    }
                    written += 1;
                    if written < 64 {
                        next = rx.try_recv().ok();
                    }
                }
                if socket.flush().await.is_err() {
                    return;
                }
            }
            msg = socket.next() => {
                let Some(Ok(msg)) = msg else { return };
                if !(msg.is_text() || msg.is_binary()) {
                    continue;
                }
                if let Ok(ClientFrame::Send { chat_id, client_msg_id, body, .. }) = Codec::decode(&msg) {
                    let Some(chat) = b.chats.get(&chat_id.0).map(|c| c.clone()) else { continue };
                    let mut log = chat.log.lock().expect("not poisoned");
                    let message = Message {
                        id: MessageId(b.next_id.fetch_add(1, Ordering::Relaxed)),
                        chat_id: ChatId(chat_id.0),
                        seq: log.len() as i64 + 1,
                        sender_id: UserId(user),
                        client_msg_id,
                        body,
                        created_at: chrono::Utc::now(),
                        ..Default::default()
                    };
                    log.push(message.clone());
                    let fanned = Arc::new(Encoded::new(ServerFrame::Message { message: message.clone() }));
                    for member in &chat.members {
                        if let Some(socks) = b.sockets.get(member) {
                            for (c, tx) in socks.iter() {
                                let frame = if *c == conn {
                                    Arc::new(Encoded::new(ServerFrame::Ack { client_msg_id, message: message.clone() }))
                                } else {
                                    fanned.clone()
                                };
                                let _ = tx.try_send(frame);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let state: Shared = Arc::new(Baseline::default());
    let app = Router::new()
        .route("/api/auth/signup", post(signup))
        .route("/api/friends/requests", post(friend_request))
        .route("/api/friends/requests/{id}/accept", post(accept))
        .route("/api/chats", post(create_chat))
        .route("/api/chats/{id}/messages", get(history))
        .route("/ws", get(ws))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    eprintln!("xfchat-baseline listening on {}", args.listen);
    axum::serve(listener, app).await?;
    Ok(())
}

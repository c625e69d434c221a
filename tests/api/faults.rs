//! Faults under traffic: database backends terminated, the server killed and restarted on the
//! same port, the database refusing connections for a while, client sockets dropped. Clients
//! resume from their positions on every reconnect; once the traffic stops, every socket's sync
//! is answered promptly and the connection gauge counts exactly the open sockets. The server's
//! stderr is a pipe nobody reads throughout: log lines written from the runtime's threads once
//! stopped the whole server when such a pipe filled, which is what left syncs unanswered for
//! seconds after faults (whose warnings fill it fast).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec, ServerFrame};

use crate::common::{metric, TestApp, TestDb, User, SECRET};
use crate::startup::{free_listen_address, serve_binary_logging_to, Process};

const CLIENTS: usize = 16;

/// One client's state, kept across its sockets.
#[derive(Default)]
struct Position {
    /// The last seq of the chat this client has, contiguously.
    seq: i64,
    /// Sends without an answer, to resend after a reconnect.
    pending: HashMap<Uuid, ClientFrame>,
}

/// Runs a client until `stop`: connect, resume, resend, send a message every 30 ms, read; on any
/// failure, reconnect. Records its contiguous position; panics on a gap or a repeat.
async fn client(
    base: String,
    user: User,
    chat: i64,
    pos: Arc<Mutex<Position>>,
    stop: Arc<AtomicBool>,
) {
    let url = format!(
        "{}/ws?token={}",
        base.replace("http://", "ws://"),
        user.token
    );
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok((ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut sink, mut stream) = ws.split();
        let mut hello = vec![{
            let at = pos.lock().await.seq;
            ClientFrame::Resume {
                epoch: None,
                positions: [(ChatId(chat), at)].into(),
                reference: None,
            }
        }];
        hello.extend(pos.lock().await.pending.values().cloned());
        let mut ok = true;
        for frame in &hello {
            ok &= sink.send(Codec::Json.encode(frame)).await.is_ok();
        }
        let mut tick = tokio::time::interval(Duration::from_millis(30));
        let drop_at = Instant::now() + Duration::from_millis(rand_ms(1500, 4000));
        while ok && !stop.load(Ordering::Relaxed) && Instant::now() < drop_at {
            tokio::select! {
                _ = tick.tick() => {
                    let id = Uuid::new_v4();
                    let frame = ClientFrame::Send { chat_id: ChatId(chat), client_msg_id: id, body: "x".into(), reply_to: None, attachments: Vec::new() };
                    pos.lock().await.pending.insert(id, frame.clone());
                    ok = sink.send(Codec::Json.encode(&frame)).await.is_ok();
                }
                msg = stream.next() => match msg {
                    Some(Ok(m @ WsMessage::Text(_))) => {
                        let mut p = pos.lock().await;
                        match Codec::decode::<ServerFrame>(&m).unwrap() {
                            ServerFrame::Message { message } => {
                                assert_eq!(message.seq, p.seq + 1, "{}: gap or repeat", user.username);
                                p.seq = message.seq;
                            }
                            ServerFrame::Ack { client_msg_id, message } => {
                                p.pending.remove(&client_msg_id);
                                assert!(message.seq <= p.seq + 1, "{}: ack past a gap", user.username);
                                p.seq = p.seq.max(message.seq);
                            }
                            ServerFrame::Error { reference: Some(_), .. } => {} // resent later
                            _ => {}
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => ok = false,
                },
            }
        }
        // Dropped without a goodbye, as a lost network would (or the server went away).
    }
}

fn rand_ms(lo: u64, hi: u64) -> u64 {
    lo + (Uuid::new_v4().as_u128() % u128::from(hi - lo)) as u64
}

#[tokio::test]
async fn after_backend_kills_a_server_restart_and_a_database_outage_every_sync_is_answered_promptly(
) {
    // A stalled server fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(120), faults_then_quiet_syncs())
        .await
        .expect("the server stalled");
}

async fn faults_then_quiet_syncs() {
    let db = TestDb::create().await;
    let url = db.url.clone();
    let listen = free_listen_address();
    let env = [
        ("JWT_SECRET", SECRET),
        ("DATABASE_URL", url.as_str()),
        ("XFCHAT_USER_RATE", "0"),
        ("XFCHAT_SIGNUP_RATE_PER_MIN", "0"),
        ("XFCHAT_SOCIAL_RATE_PER_MIN", "0"),
        ("XFCHAT_DB_PERMIT_TIMEOUT_MS", "500"),
        // Tests share one PostgreSQL (100 connections) and run side by side.
        ("XFCHAT_DB_MAX_CONNECTIONS", "6"),
    ];
    // Its stderr is a pipe nobody reads, as with a log shipper that has fallen behind.
    let serve = || serve_binary_logging_to(&listen, &env, Stdio::piped());
    let (server, base) = serve().await;
    let server = Process(server);
    let app = TestApp::at(&base, db);
    let mut users = Vec::new();
    for i in 0..CLIENTS {
        users.push(app.signup(&format!("user{i}")).await);
    }
    let others: Vec<&User> = users[1..].iter().collect();
    let chat = app.group(&users[0], &others).await;

    let stop = Arc::new(AtomicBool::new(false));
    let positions: Vec<_> = (0..CLIENTS)
        .map(|_| Arc::new(Mutex::new(Position::default())))
        .collect();
    let tasks: Vec<_> = users
        .iter()
        .zip(&positions)
        .map(|(u, p)| {
            tokio::spawn(client(
                base.clone(),
                u.clone(),
                chat,
                p.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.db.accept_connections(true).await; // every backend terminated
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(server);
    let (restarted, _) = serve().await;
    let _server = Process(restarted);
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.db.accept_connections(false).await; // an outage: connections refused for two seconds
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.db.accept_connections(true).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    // Sends the clients made just before they stopped may still be committing.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Quiet now: every client connects and syncs at its position; each answer comes at once.
    let mut sockets = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut tails = Vec::new();
    for (user, pos) in users.iter().zip(&positions) {
        let mut ws = app.ws(user).await;
        let at = pos.lock().await.seq;
        let asked = Instant::now();
        ws.send(&ClientFrame::Sync {
            chat_id: ChatId(chat),
            after_seq: at,
            limit: None,
            reference: None,
        })
        .await;
        loop {
            match ws.next().await {
                ServerFrame::Synced { last_seq, .. } => {
                    tails.push(last_seq);
                    break;
                }
                ServerFrame::Message { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // The fault left syncs waiting 15 to 25 seconds; one query's time is the bound here,
        // with room for a loaded machine.
        let took = asked.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "{}: sync answered after {took:?}",
            user.username
        );
        slowest = slowest.max(took);
        sockets.push(ws);
    }
    eprintln!("slowest sync after the faults: {slowest:?}; chat at {tails:?}");
    let pool = app.db.pool().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(stored > 500, "traffic flowed through the faults: {stored}");
    assert!(
        tails.iter().all(|&t| t == stored),
        "every sync reached the end: {tails:?}"
    );
    let metrics = app.get_raw("/metrics").await.text().await.unwrap();
    let open = metric(&metrics, "xfchat_ws_connections");
    assert_eq!(
        open,
        Some(CLIENTS as f64),
        "the gauge counts the open sockets"
    );
}

/// A server's stderr read by nobody: a pipe that fills, as with a stuck log shipper. Log lines
/// were written from the runtime's threads, so the first full pipe stopped every one of them:
/// requests, sockets and syncs alike waited until someone read the pipe again.
#[tokio::test]
async fn a_log_reader_that_stops_reading_neither_stalls_requests_nor_sockets() {
    tokio::time::timeout(Duration::from_secs(120), unread_log())
        .await
        .expect("the server stalled");
}

async fn unread_log() {
    let db = TestDb::create().await;
    let env = [
        ("JWT_SECRET", SECRET),
        ("DATABASE_URL", db.url.as_str()),
        ("RUST_LOG", "debug"),
        ("XFCHAT_DB_MAX_CONNECTIONS", "4"),
    ];
    let (mut server, base) =
        serve_binary_logging_to(&free_listen_address(), &env, Stdio::piped()).await;
    let _unread = server.stderr.take();
    let _server = Process(server);
    let app = TestApp::at(&base, db);
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    let mut ws = app.ws(&bob).await;

    // Each request logs a line: far more than a pipe (64 KiB) and the log queue hold.
    let client = reqwest::Client::new();
    let url = format!("{}/readyz", app.base);
    let answered = futures_util::stream::iter(0..6000)
        .map(|_| {
            let request = client.get(&url).timeout(Duration::from_secs(5)).send();
            async move { matches!(request.await, Ok(r) if r.status() == 200) }
        })
        .buffer_unordered(16)
        .take_while(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(
        answered, 6000,
        "every request answered while stderr is not read"
    );

    app.send(&alice, chat, Uuid::new_v4(), "still here").await;
    match ws.next().await {
        ServerFrame::Message { message } => assert_eq!(message.body, "still here"),
        other => panic!("unexpected {other:?}"),
    }
    // The counter is sampled every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = app.get_raw("/metrics").await.text().await.unwrap();
    let dropped = metric(&metrics, "xfchat_log_lines_dropped_total");
    assert!(
        dropped.is_some_and(|d| d > 0.0),
        "lines beyond the queue are dropped and counted: {dropped:?}"
    );
}

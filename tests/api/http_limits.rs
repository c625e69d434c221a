//! HTTP connections cannot be held open for ever: headers must arrive in time, idle keep-alive
//! connections close, requests have a deadline, and open connections are capped.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{error_code, metric, metrics_text, spawn_app_with, TestApp};

/// Far beyond every timeout these tests configure: reaching it means the server never acted.
const BOUND: Duration = Duration::from_secs(10);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(BOUND, tcp.read_to_end(&mut got))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_half_sent_request_is_closed_within_the_header_timeout() {
    let app = spawn_app_with(|s| s.http_header_timeout_ms = 300).await;
    let mut tcp = connect(&app).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let answer = read_until_closed(&mut tcp).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(started.elapsed() < BOUND);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|s| s.http_header_timeout_ms = 300).await;
    let mut tcp = connect(&app).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = spawn_app_with(|s| s.http_max_connections = 2).await;
    let held = [connect(&app).await, connect(&app).await];
    // Give the server time to accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = tokio::spawn({
        let url = format!("{}/healthz", app.base);
        async move { reqwest::get(url).await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served beyond the cap"
    );
    drop(held);
    let status = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("served once a slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_request_past_the_request_timeout_is_answered_503_timeout() {
    let app = spawn_app_with(|s| s.http_request_timeout_ms = 300).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    app.send(&alice, chat, uuid::Uuid::new_v4(), "hi").await;
    // A row lock held elsewhere keeps the read-marker update waiting.
    let pool = app.db.pool().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM conversation_members WHERE user_id = $1 FOR UPDATE")
        .bind(bob.id)
        .execute(&mut *lock)
        .await
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/api/chats/{chat}/read"),
            &bob,
            json!({ "seq": 1 }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "timeout")
    );
    lock.rollback().await.unwrap();
}

/// A connection from `ip` on the loopback network (all of 127.0.0.0/8 reaches the server), with
/// a small receive buffer so that unread answers soon fill it.
async fn connect_from(app: &TestApp, ip: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let server = app.base.trim_start_matches("http://").parse().unwrap();
    socket.connect(server).await.unwrap()
}

/// `/healthz` asked from `ip` on a connection of its own.
async fn health_from(app: &TestApp, ip: &str) -> StatusCode {
    let client = reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let asked = client.get(format!("{}/healthz", app.base)).send();
    tokio::time::timeout(BOUND, asked)
        .await
        .expect("answered in time")
        .unwrap()
        .status()
}

#[tokio::test]
async fn answers_never_read_close_their_connection_within_the_write_timeout_so_others_are_served() {
    let app = spawn_app_with(|s| {
        s.http_max_connections = 2;
        s.http_write_timeout_ms = 500;
    })
    .await;
    // Two connections take every slot, pipeline requests for the web page and never read.
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let tcp = connect_from(&app, "127.0.0.1").await;
        let (mut read, mut write) = tcp.into_split();
        let writer = tokio::spawn(async move {
            let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
            for _ in 0..64 {
                if write.write_all(&request).await.is_err() {
                    break;
                }
            }
            write
        });
        hogs.push((
            writer,
            tokio::spawn(async move {
                // Reads nothing until the server has given up, then sees the connection closed.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let mut rest = Vec::new();
                tokio::time::timeout(BOUND, read.read_to_end(&mut rest)).await
            }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another client is served once the write timeout has closed a hog.
    assert_eq!(health_from(&app, "127.0.0.2").await, StatusCode::OK);
    for (writer, reader) in hogs {
        let closed = reader.await.unwrap();
        assert!(closed.is_ok(), "a hog's connection was never closed");
        writer.abort();
    }
    let metrics = metrics_text(&app.base).await;
    let closed = metric(
        &metrics,
        "xfchat_http_connections_closed_total{reason=\"write_timeout\"}",
    );
    assert!(closed >= Some(1.0), "{metrics}");
}

#[tokio::test]
async fn one_address_holds_at_most_its_cap_of_http_connections_and_others_are_still_served() {
    let app = spawn_app_with(|s| s.http_max_per_ip = 2).await;
    let held = [
        connect_from(&app, "127.0.0.1").await,
        connect_from(&app, "127.0.0.1").await,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect_from(&app, "127.0.0.1").await;
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut third).await;
    assert!(
        answer.is_empty(),
        "served beyond the address's cap: {answer}"
    );
    // Another address is served while the first holds its cap, and the first is served again
    // once it lets go.
    assert_eq!(health_from(&app, "127.0.0.2").await, StatusCode::OK);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(health_from(&app, "127.0.0.1").await, StatusCode::OK);
    let metrics = metrics_text(&app.base).await;
    let closed = metric(
        &metrics,
        "xfchat_http_connections_closed_total{reason=\"address_cap\"}",
    );
    assert!(closed >= Some(1.0), "{metrics}");
}

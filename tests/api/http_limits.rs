//! HTTP connections cannot be held open for ever: headers must arrive in time, idle keep-alive
//! connections close, requests have a deadline, and open connections are capped.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{error_code, spawn_app_with, TestApp};

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

//! Tokens take effect on open sockets: expiry and logout close them with their own codes, and a
//! logout on one server is honoured by every server on the same database.

use reqwest::{Method, StatusCode};
use serde_json::json;
use xfchat::server::{Migrations, Server};

use crate::common::{error_code, settings, spawn_app, spawn_app_with, TestApp};
use crate::ws::WAIT;

/// Another server on `app`'s database (the database stays `app`'s to drop).
pub async fn second_server(app: &TestApp) -> TestApp {
    let config = settings(&app.db).validate().unwrap();
    let second = Server::start(config, Migrations::Apply).await.unwrap();
    TestApp {
        base: format!("http://{}", second.local_addr()),
        client: reqwest::Client::new(),
        server: Some(second),
        db: crate::common::TestDb {
            name: String::new(),
            url: app.db.url.clone(),
        },
    }
}

fn close_code(close: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> Option<u16> {
    close.map(|c| u16::from(c.code))
}

#[tokio::test]
async fn a_socket_is_closed_with_4001_when_its_token_expires() {
    let app = spawn_app_with(|s| s.token_ttl_secs = 2).await;
    let alice = app.signup("alice").await;
    let mut ws = app.ws(&alice).await;
    let (close, _) = ws.until_closed(WAIT).await;
    assert_eq!(close_code(close), Some(4001));
}

#[tokio::test]
async fn logout_revokes_only_the_token_in_use_and_closes_its_sockets_with_4002() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let other = app.login("alice").await;
    let mut revoked_ws = app.ws(&alice).await;
    let mut kept_ws = app.ws(&other).await;
    let (status, _) = app
        .call(Method::POST, "/api/auth/logout", Some(&alice.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (close, _) = revoked_ws.until_closed(WAIT).await;
    assert_eq!(close_code(close), Some(4002));
    let (status, body) = app.get("/api/auth/me", &alice).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let url = format!(
        "{}/ws?token={}",
        app.base.replace("http://", "ws://"),
        alice.token
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 401)
        }
        other => panic!("a revoked token upgrades: {:?}", other.map(|_| ())),
    }
    let (status, _) = app.get("/api/auth/me", &other).await;
    assert_eq!(status, StatusCode::OK, "the other token still works");
    kept_ws
        .send(&xfchat::protocol::ClientFrame::Ping {
            nonce: json!(1),
            reference: None,
        })
        .await;
    assert!(matches!(
        kept_ws.next().await,
        xfchat::protocol::ServerFrame::Pong { .. }
    ));
}

#[tokio::test]
async fn a_logout_on_one_server_closes_the_tokens_sockets_on_another() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let there = second_server(&app).await;
    let mut ws = there.ws(&alice).await;
    let (status, _) = app
        .call(Method::POST, "/api/auth/logout", Some(&alice.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (close, _) = ws.until_closed(WAIT).await;
    assert_eq!(close_code(close), Some(4002));
    let (status, _) = there.get("/api/auth/me", &alice).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_server_that_starts_refuses_every_unexpired_revoked_token_from_its_first_request() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    // 25,000 revocations made before alice's logout, so hers is far past the first page read.
    let pool = app.db.pool().await;
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, user_id, expires_at) \
         SELECT gen_random_uuid(), $1, now() + interval '1 day' FROM generate_series(1, 25000)",
    )
    .bind(alice.id)
    .execute(&pool)
    .await
    .unwrap();
    let (status, _) = app
        .call(Method::POST, "/api/auth/logout", Some(&alice.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let there = second_server(&app).await;
    let (status, _) = there.get("/api/auth/me", &alice).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "revoked before the server started"
    );
}

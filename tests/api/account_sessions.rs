//! Sessions and what an account can do to them: short-lived access tokens with rotating refresh
//! tokens, logout everywhere, a password change, deletion, socket tickets and origins.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{error_code, spawn_app, spawn_app_with, TestApp, User};
use crate::ws::WAIT;

async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    app.call(Method::POST, path, token, Some(body)).await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> (StatusCode, Value) {
    post(
        app,
        "/api/auth/refresh",
        None,
        json!({ "refresh_token": refresh_token }),
    )
    .await
}

async fn me(app: &TestApp, token: &str) -> StatusCode {
    app.call(Method::GET, "/api/auth/me", Some(token), None)
        .await
        .0
}

async fn login(app: &TestApp, username: &str, password: &str) -> (StatusCode, Value) {
    post(
        app,
        "/api/auth/login",
        None,
        json!({ "username": username, "password": password }),
    )
    .await
}

fn close_code(
    ws_close: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
) -> Option<u16> {
    ws_close.map(|c| u16::from(c.code))
}

/// The status of an upgrade to `/ws` with `query` and `headers`: 101 if it opened.
async fn upgrade(app: &TestApp, query: &str, headers: &[(&str, &str)]) -> u16 {
    let url = format!("{}/ws{query}", app.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("upgrade failed without an answer: {e}"),
    }
}

#[tokio::test]
async fn an_access_token_lives_the_configured_minutes_and_a_refresh_rotates_the_refresh_token() {
    let app = spawn_app_with(|s| s.token_ttl_secs = 120).await;
    let (status, body) = post(
        &app,
        "/api/auth/signup",
        None,
        json!({ "username": "alice", "password": "correct horse" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["expires_in"], 120);
    let first = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = refresh(&app, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 120);
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(
        me(&app, body["token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    // Only a hash is stored.
    let pool = app.db.pool().await;
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT refresh_hash FROM sessions")
        .fetch_all(&pool)
        .await
        .unwrap();
    let secret = second.split_once('.').unwrap().1;
    assert!(stored.iter().all(|h| h
        .windows(8)
        .all(|w| !secret.as_bytes().windows(8).any(|s| s == w))));
    // Malformed and unknown refresh tokens are refused alike.
    for bad in ["", "x", "00000000-0000-0000-0000-000000000000.abc"] {
        let (status, body) = refresh(&app, bad).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
    }
}

#[tokio::test]
async fn a_superseded_refresh_token_shown_again_ends_its_session_unless_two_tabs_raced() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let mut ws = app.ws(&alice).await;
    let (_, body) = refresh(&app, &alice.refresh).await;
    let current = body["refresh_token"].as_str().unwrap().to_owned();
    // At once, it is a race between two tabs: refused, the session goes on.
    assert_eq!(
        refresh(&app, &alice.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&app, &alice.token).await, StatusCode::OK);
    // Later, the old token was copied: the session ends, its tokens and sockets with it.
    let pool = app.db.pool().await;
    sqlx::query("UPDATE sessions SET refreshed_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        refresh(&app, &alice.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(refresh(&app, &current).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &alice.token).await, StatusCode::UNAUTHORIZED);
    let (close, _) = ws.until_closed(WAIT).await;
    assert_eq!(close_code(close), Some(4002));
}

#[tokio::test]
async fn logout_ends_the_session_so_its_refresh_token_is_refused_too() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let (status, _) = post(&app, "/api/auth/logout", Some(&alice.token), json!(null)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        refresh(&app, &alice.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn logout_everywhere_revokes_every_token_and_refresh_token_of_the_account_and_closes_its_sockets(
) {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let phone = app.login("alice").await;
    let bob = app.signup("bob").await;
    let mut sockets = [app.ws(&alice).await, app.ws(&phone).await];
    let (status, _) = post(
        &app,
        "/api/auth/logout-all",
        Some(&phone.token),
        json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for ws in &mut sockets {
        let (close, _) = ws.until_closed(WAIT).await;
        assert_eq!(close_code(close), Some(4002));
    }
    for session in [&alice, &phone] {
        assert_eq!(me(&app, &session.token).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            refresh(&app, &session.refresh).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        me(&app, &bob.token).await,
        StatusCode::OK,
        "another account is untouched"
    );
    let again = app.login("alice").await;
    assert_eq!(me(&app, &again.token).await, StatusCode::OK);
}

#[tokio::test]
async fn a_password_change_needs_the_current_password_and_ends_every_other_session() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let laptop = app.login("alice").await;
    let mut laptop_ws = app.ws(&laptop).await;
    let change =
        |current: &str, new: &str| json!({ "current_password": current, "new_password": new });
    let (status, body) = post(
        &app,
        "/api/auth/password",
        Some(&alice.token),
        change("wrong horse", "battery staple"),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    let (status, body) = post(
        &app,
        "/api/auth/password",
        Some(&alice.token),
        change("correct horse", "short"),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
    assert_eq!(
        me(&app, &laptop.token).await,
        StatusCode::OK,
        "nothing changed yet"
    );

    let (status, _) = post(
        &app,
        "/api/auth/password",
        Some(&alice.token),
        change("correct horse", "battery staple"),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        me(&app, &alice.token).await,
        StatusCode::OK,
        "this session goes on"
    );
    assert_eq!(refresh(&app, &alice.refresh).await.0, StatusCode::OK);
    assert_eq!(me(&app, &laptop.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, &laptop.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (close, _) = laptop_ws.until_closed(WAIT).await;
    assert_eq!(close_code(close), Some(4002));
    assert_eq!(
        login(&app, "alice", "correct horse").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "alice", "battery staple").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn deleting_an_account_keeps_its_messages_under_a_deleted_name_and_takes_it_out_of_everything(
) {
    let app = spawn_app().await;
    let (alice, bob, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("carol").await,
    );
    let group = app.group(&alice, &[&bob, &carol]).await;
    let direct = app.direct(&alice, &bob).await;
    app.send(&alice, direct, uuid::Uuid::new_v4(), "hello bob")
        .await;
    app.send(&alice, group, uuid::Uuid::new_v4(), "hello all")
        .await;
    let mut alice_ws = app.ws(&alice).await;
    let mut bob_ws = app.ws(&bob).await;

    let (status, _) = app
        .call(
            Method::DELETE,
            "/api/auth/me",
            Some(&alice.token),
            Some(json!({ "password": "wrong horse" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a wrong password deletes nothing"
    );
    assert_eq!(me(&app, &alice.token).await, StatusCode::OK);

    let (status, _) = app
        .call(
            Method::DELETE,
            "/api/auth/me",
            Some(&alice.token),
            Some(json!({ "password": "correct horse" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (close, _) = alice_ws.until_closed(WAIT).await;
    assert_eq!(close_code(close), Some(4002));
    assert_eq!(me(&app, &alice.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, &alice.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "alice", "correct horse").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Bob hears that the group changed, and it no longer holds Alice.
    let changed = bob_ws
        .next_matching(|f| matches!(f, xfchat::protocol::ServerFrame::Members { .. }))
        .await;
    let xfchat::protocol::ServerFrame::Members {
        chat_id, removed, ..
    } = changed
    else {
        unreachable!()
    };
    assert_eq!(
        (chat_id.0, removed),
        (group, vec![xfchat::ids::UserId(alice.id)])
    );
    let (_, body) = app.get(&format!("/api/chats/{group}"), &bob).await;
    let members: Vec<i64> = body["chat"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert!(!members.contains(&alice.id), "{body}");
    // Her messages stay, under a deleted account's name.
    for chat in [direct, group] {
        let (status, body) = app
            .get(&format!("/api/chats/{chat}/messages?after_seq=0"), &bob)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["messages"][0]["sender_id"], alice.id, "{body}");
    }
    let (status, _) = app
        .send(&bob, direct, uuid::Uuid::new_v4(), "are you gone?")
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "her direct chat takes no new messages"
    );
    let (_, body) = app.get(&format!("/api/chats/{direct}"), &bob).await;
    let names: Vec<&str> = body["chat"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["display_name"].as_str())
        .collect();
    assert!(names.contains(&"Deleted account"), "{body}");
    // Her friendships are gone and her name is free again.
    let (_, body) = app.get("/api/friends", &bob).await;
    assert_eq!(body["friends"], json!([]), "{body}");
    let again = app.signup("alice").await;
    assert_ne!(again.id, alice.id);
}

#[tokio::test]
async fn a_socket_ticket_opens_one_socket_once_and_no_token_appears_in_the_url() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let ticket = |app: &TestApp, token: String| {
        let app = app.base.clone();
        async move {
            let res = reqwest::Client::new()
                .post(format!("{app}/api/auth/ws-ticket"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["expires_in"], 30);
            body["ticket"].as_str().unwrap().to_owned()
        }
    };
    let first = ticket(&app, alice.token.clone()).await;
    assert_eq!(upgrade(&app, &format!("?ticket={first}"), &[]).await, 101);
    assert_eq!(
        upgrade(&app, &format!("?ticket={first}"), &[]).await,
        401,
        "used twice"
    );
    assert_eq!(upgrade(&app, "?ticket=made-up", &[]).await, 401);
    let second = ticket(&app, alice.token.clone()).await;
    let (status, _) = post(&app, "/api/auth/logout", Some(&alice.token), json!(null)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        upgrade(&app, &format!("?ticket={second}"), &[]).await,
        401,
        "a ticket of a session that ended"
    );
}

#[tokio::test]
async fn a_browser_socket_from_a_foreign_origin_is_refused_and_its_own_or_an_allowed_one_opens() {
    let app =
        spawn_app_with(|s| s.ws_allowed_origins = vec!["https://chat.example.com".into()]).await;
    let alice = app.signup("alice").await;
    let bearer = format!("Bearer {}", alice.token);
    let own = app.base.clone();
    let host = own.trim_start_matches("http://").to_owned();
    for (origin, status) in [
        ("https://evil.example.com", 403),
        ("null", 403),
        (own.as_str(), 101),
        ("https://chat.example.com", 101),
    ] {
        let got = upgrade(
            &app,
            "",
            &[
                ("authorization", &bearer),
                ("origin", origin),
                ("host", &host),
            ],
        )
        .await;
        assert_eq!(got, status, "origin {origin}");
    }
    assert_eq!(
        upgrade(&app, "", &[("authorization", &bearer)]).await,
        101,
        "no origin: not a browser"
    );
}

/// A login from `ip` on the loopback network.
async fn login_from(app: &TestApp, ip: &str, user: &User, password: &str) -> StatusCode {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(format!("{}/api/auth/login", app.base))
        .json(&json!({ "username": user.username, "password": password }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn guesses_from_other_addresses_do_not_lock_the_owner_out() {
    let app = spawn_app_with(|s| {
        s.login_account_rate_per_min = 5;
        s.login_account_burst = 5;
        s.login_account_total_per_min = 8;
        s.login_ip_rate_per_min = 100;
    })
    .await;
    let alice = app.signup("alice").await; // from 127.0.0.1: a known address
                                           // One attacker's address runs out of its own guesses at the account.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(login_from(&app, "127.0.0.2", &alice, "wrong horse").await);
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[5..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    // A second one spends the rest of the account's ceiling for unknown addresses.
    for _ in 0..5 {
        login_from(&app, "127.0.0.3", &alice, "wrong horse").await;
    }
    assert_eq!(
        login_from(&app, "127.0.0.4", &alice, "correct horse").await,
        StatusCode::TOO_MANY_REQUESTS,
        "an address the account never used waits"
    );
    // The owner, from where she logged in before, gets in.
    assert_eq!(
        login_from(&app, "127.0.0.1", &alice, "correct horse").await,
        StatusCode::OK
    );
}

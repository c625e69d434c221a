//! Abuse is throttled: password guessing, signup floods, one user's traffic and one address's
//! sockets, each answered `rate_limited` (or 429 before an upgrade) without hurting others.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, ServerFrame};

use crate::common::{error_code, spawn_app_with, TestApp};
use crate::ws::{send, sync};

/// Logs in as `username` with `password`, optionally through a proxy naming `forwarded_for`.
async fn login(
    app: &TestApp,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = app
        .client
        .post(format!("{}/api/auth/login", app.base))
        .json(&json!({ "username": username, "password": password }));
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, res.json().await.unwrap())
}

#[tokio::test]
async fn login_is_limited_per_account_and_a_right_password_past_the_limit_still_waits() {
    let app = spawn_app_with(|s| {
        s.login_account_rate_per_min = 1;
        s.login_account_burst = 3;
    })
    .await;
    app.signup("alice").await;
    app.signup("bob").await;
    for _ in 0..3 {
        let (status, _, _) = login(&app, "alice", "wrong password", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for password in ["wrong password", "correct horse"] {
        let (status, retry, body) = login(&app, "ALICE", password, None).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        let secs: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
    }
    let (status, _, _) = login(&app, "bob", "correct horse", None).await;
    assert_eq!(status, StatusCode::OK, "another account is not affected");
}

#[tokio::test]
async fn login_is_limited_per_client_address_and_forwarded_for_counts_only_from_a_trusted_proxy() {
    for trusted in [false, true] {
        let app = spawn_app_with(|s| {
            s.login_ip_rate_per_min = 2;
            if trusted {
                s.trusted_proxies = vec!["127.0.0.1".into()];
            }
        })
        .await;
        app.signup("alice").await;
        for name in ["bob", "carol"] {
            let (status, _, _) = login(&app, name, "whatever pass", Some("198.51.100.1")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let (status, _, _) = login(&app, "alice", "correct horse", Some("198.51.100.2")).await;
        let expected = if trusted {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(status, expected, "trusted proxy: {trusted}");
    }
}

#[tokio::test]
async fn signups_are_limited_per_client_address() {
    let app = spawn_app_with(|s| s.signup_rate_per_min = 2).await;
    app.signup("alice").await;
    app.signup("bob").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/signup",
            None,
            Some(json!({ "username": "carol", "password": "correct horse" })),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
}

#[tokio::test]
async fn sends_syncs_and_reads_share_one_budget_per_user_over_every_socket_and_http() {
    let app = spawn_app_with(|s| s.user_rate = 1).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a1 = app.ws(&alice).await;
    let mut a2 = app.ws(&alice).await;
    // The burst is twice the rate: two actions pass, whatever carries them.
    a1.send(&send(chat, "one").1).await;
    assert!(matches!(a1.next().await, ServerFrame::Ack { .. }));
    a2.send(&sync(chat, 0)).await;
    loop {
        if let ServerFrame::Synced { .. } = a2.next().await {
            break;
        }
    }
    let (status, body) = app.send(&alice, chat, uuid::Uuid::new_v4(), "http").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    a1.send(&ClientFrame::Read {
        chat_id: ChatId(chat),
        seq: 1,
        reference: None,
    })
    .await;
    loop {
        match a1.next().await {
            ServerFrame::Error { code, .. } => break assert_eq!(code, "rate_limited"),
            ServerFrame::Message { .. } => {}
            other => panic!("expected rate_limited, got {other:?}"),
        }
    }
    let (status, _) = app.send(&bob, chat, uuid::Uuid::new_v4(), "bob").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another user has a budget of their own"
    );
}

#[tokio::test]
async fn sockets_per_client_address_are_capped_before_the_upgrade() {
    let app = spawn_app_with(|s| s.ws_max_per_ip = 2).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let url = format!("{}/ws", app.base.replace("http://", "ws://"));
    let _a = app.ws(&alice).await;
    let _b = app.ws(&bob).await;
    match tokio_tungstenite::connect_async(format!("{url}?token={}", bob.token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 429)
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    drop(_a);
    // The slot comes back once the server has seen the socket go.
    let deadline = tokio::time::Instant::now() + crate::ws::WAIT;
    loop {
        match tokio_tungstenite::connect_async(format!("{url}?token={}", bob.token)).await {
            Ok(_) => break,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("the slot never came back: {e}"),
        }
    }
}

#[tokio::test]
async fn refused_sockets_free_no_slot_so_the_per_address_cap_holds_over_many_attempts() {
    let app = spawn_app_with(|s| s.ws_max_per_ip = 2).await;
    let alice = app.signup("alice").await;
    let url = format!(
        "{}/ws?token={}",
        app.base.replace("http://", "ws://"),
        alice.token
    );
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status().as_u16(), 429);
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((open.len(), refused), (2, 10), "two sockets, ten refusals");
}

#[tokio::test]
async fn a_read_marker_that_does_not_move_is_not_announced() {
    let app = spawn_app_with(|_| {}).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    app.send(&alice, chat, uuid::Uuid::new_v4(), "hi").await;
    let mut a = app.ws(&alice).await;
    for _ in 0..3 {
        let (status, _) = app
            .post(
                &format!("/api/chats/{chat}/read"),
                &bob,
                json!({ "seq": 1 }),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    match a.next().await {
        ServerFrame::Read { seq, .. } => assert_eq!(seq, 1),
        other => panic!("expected one read event, got {other:?}"),
    }
    a.expect_silence(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn friend_requests_group_creations_and_member_changes_share_a_per_user_limit() {
    let app = spawn_app_with(|s| s.social_rate_per_min = 5).await;
    let (alice, bob, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("carol").await,
    );
    app.befriend(&alice, &bob).await; // one request of alice's five
    let mut statuses = Vec::new();
    for i in 0..6 {
        let (status, body) = app
            .post(
                "/api/chats",
                &alice,
                json!({ "title": format!("g{i}"), "member_ids": [bob.id] }),
            )
            .await;
        statuses.push(status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(error_code(&body), "rate_limited");
        }
    }
    assert_eq!(
        statuses,
        [201, 201, 201, 201, 429, 429],
        "four groups, then refused"
    );
    // Requests pay from the same budget; someone else's is untouched.
    let (status, _) = app
        .post(
            "/api/friends/requests",
            &alice,
            json!({ "username": "carol" }),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = app
        .post(
            "/api/friends/requests",
            &carol,
            json!({ "username": "alice" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

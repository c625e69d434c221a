//! Presence: friends see who is online (a first socket anywhere) and when they were last seen,
//! live and across nodes; a user may hide it; strangers never see it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use xfchat::ids::UserId;
use xfchat::protocol::ServerFrame;

use crate::cluster::cluster_with;
use crate::common::{spawn_app, TestApp, User};
use crate::ws::Ws;

/// The next presence frame on `ws`: (user, online, whether a last-seen time came).
async fn next_presence(ws: &mut Ws) -> (i64, bool, bool) {
    ws.presence = true;
    match ws
        .next_matching(|f| matches!(f, ServerFrame::Presence { .. }))
        .await
    {
        ServerFrame::Presence {
            user_id: UserId(user),
            online,
            last_seen_at,
        } => (user, online, last_seen_at.is_some()),
        _ => unreachable!(),
    }
}

/// How `viewer`'s friend list shows `friend`: (online, last_seen_at).
async fn as_friend(app: &TestApp, viewer: &User, friend: &User) -> (bool, Value) {
    let (status, body) = app.get("/api/friends", viewer).await;
    assert_eq!(status, StatusCode::OK);
    let f = body["friends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == friend.id)
        .expect("a friend")
        .clone();
    (f["online"].as_bool().unwrap(), f["last_seen_at"].clone())
}

#[tokio::test]
async fn a_friend_sees_me_come_online_with_my_first_socket_and_go_offline_with_my_last() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    app.befriend(&alice, &bob).await;
    assert_eq!(as_friend(&app, &bob, &alice).await, (false, Value::Null));
    let mut b = app.ws(&bob).await;

    let a1 = app.ws(&alice).await;
    assert_eq!(next_presence(&mut b).await, (alice.id, true, false));
    assert!(as_friend(&app, &bob, &alice).await.0);
    // A second socket, and one of the two closed: still online, nothing to tell.
    let a2 = app.ws(&alice).await;
    drop(a1);
    b.expect_silence(Duration::from_millis(1500)).await;
    assert!(as_friend(&app, &bob, &alice).await.0);
    drop(a2);
    assert_eq!(next_presence(&mut b).await, (alice.id, false, true));
    let (online, seen) = as_friend(&app, &bob, &alice).await;
    assert!(!online);
    assert!(
        seen.is_string(),
        "last seen when her last socket closed: {seen}"
    );
}

#[tokio::test]
async fn hidden_presence_reads_as_offline_without_a_time_and_friends_are_told_at_once() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    app.befriend(&alice, &bob).await;
    let mut b = app.ws(&bob).await;
    let _a = app.ws(&alice).await;
    assert_eq!(next_presence(&mut b).await, (alice.id, true, false));

    let hide = |show: bool| {
        app.call(
            Method::PATCH,
            "/api/auth/me",
            Some(&alice.token),
            Some(json!({ "show_presence": show })),
        )
    };
    let (status, body) = hide(false).await;
    assert_eq!(
        (status, &body["show_presence"]),
        (StatusCode::OK, &json!(false))
    );
    assert_eq!(next_presence(&mut b).await, (alice.id, false, false));
    assert_eq!(as_friend(&app, &bob, &alice).await, (false, Value::Null));
    let (_, me) = app.get("/api/auth/me", &alice).await;
    assert_eq!(me["show_presence"], false);

    hide(true).await;
    assert_eq!(next_presence(&mut b).await, (alice.id, true, false));
    let (status, body) = app
        .call(
            Method::PATCH,
            "/api/auth/me",
            Some(&alice.token),
            Some(json!({ "show_presence": "no" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn someone_who_is_not_a_friend_never_hears_of_my_presence() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let carol = app.signup("carol").await;
    // Carol shares a group with alice but is not her friend.
    app.befriend(&bob, &alice).await;
    app.befriend(&bob, &carol).await;
    let (status, _) = app
        .post(
            "/api/chats",
            &bob,
            json!({"title": "g", "member_ids": [alice.id, carol.id]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut b = app.ws(&bob).await;
    let mut c = app.ws(&carol).await;
    assert_eq!(next_presence(&mut b).await, (carol.id, true, false));
    let a = app.ws(&alice).await;
    assert_eq!(next_presence(&mut b).await, (alice.id, true, false));
    drop(a);
    assert_eq!(next_presence(&mut b).await, (alice.id, false, true));
    // Carol, in a group with alice but not her friend, heard nothing of her (of bob, her
    // friend, she may have).
    c.presence = true;
    let quiet = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            if let ServerFrame::Presence { user_id, .. } = c.next().await {
                assert_ne!(user_id, UserId(alice.id), "carol heard of alice");
            }
        }
    });
    assert!(quiet.await.is_err(), "read until the quiet time ran out");
}

#[tokio::test]
async fn presence_crosses_nodes_and_the_users_of_a_crashed_node_go_offline() {
    // Pings every 5 s keep the test's reader waiting past its 15 s for a frame.
    let mut c = cluster_with(2, &[("XFCHAT_WS_PING_INTERVAL_MS", "5000")]).await;
    let (alice, bob) = (c.app.signup("alice").await, c.app.signup("bob").await);
    c.app.befriend(&alice, &bob).await;
    let mut b = c.ws(1, &bob).await;
    let _a = c.ws(0, &alice).await;
    assert_eq!(next_presence(&mut b).await, (alice.id, true, false));
    // Node 0 dies without closing anything: node 1 finds its instance silent and says so.
    c.nodes[0] = None;
    let got = tokio::time::timeout(Duration::from_secs(60), next_presence(&mut b)).await;
    assert_eq!(
        got.expect("offline within a minute"),
        (alice.id, false, true)
    );
}

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{error_code, spawn_app};

#[tokio::test]
async fn friend_request_lifecycle_is_persisted() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let carol = app.signup("carol").await;

    let (status, body) = app
        .post(
            "/api/friends/requests",
            &alice,
            json!({ "username": "bob" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["request"]["status"], "pending");
    let first = body["request"]["id"].as_i64().unwrap();

    // One pending request per pair, whichever way it points.
    let (status, body) = app
        .post(
            "/api/friends/requests",
            &alice,
            json!({ "username": "bob" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "request_pending")
    );
    let (status, body) = app
        .post(
            "/api/friends/requests",
            &bob,
            json!({ "username": "alice" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "request_pending")
    );

    let (_, lists) = app.get("/api/friends/requests", &bob).await;
    assert_eq!(lists["incoming"][0]["id"], first);
    assert_eq!(lists["outgoing"].as_array().unwrap().len(), 0);
    let (_, lists) = app.get("/api/friends/requests", &alice).await;
    assert_eq!(lists["outgoing"][0]["id"], first);

    // Only the recipient may decline; a stranger is told it does not exist.
    let (status, _) = app
        .post(
            &format!("/api/friends/requests/{first}/decline"),
            &carol,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            &format!("/api/friends/requests/{first}/accept"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .post(
            &format!("/api/friends/requests/{first}/decline"),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["request"]["status"], "declined");
    let (status, body) = app
        .post(
            &format!("/api/friends/requests/{first}/accept"),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "request_not_pending")
    );

    // Asking again at once is refused: they declined. After the cooldown it is allowed.
    let (status, body) = app
        .post(
            "/api/friends/requests",
            &alice,
            json!({ "username": "bob" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "request_declined")
    );
    let pool = app.db.pool().await;
    sqlx::query("UPDATE friend_requests SET updated_at = now() - interval '2 days'")
        .execute(&pool)
        .await
        .unwrap();

    // Sent again and cancelled by the sender.
    let (_, body) = app
        .post(
            "/api/friends/requests",
            &alice,
            json!({ "username": "bob" }),
        )
        .await;
    let second = body["request"]["id"].as_i64().unwrap();
    let (status, body) = app
        .post(
            &format!("/api/friends/requests/{second}/cancel"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["request"]["status"], "cancelled");

    // Sent by bob this time and accepted.
    let (_, body) = app
        .post(
            "/api/friends/requests",
            &bob,
            json!({ "username": "alice" }),
        )
        .await;
    let third = body["request"]["id"].as_i64().unwrap();
    let (status, body) = app
        .post(
            &format!("/api/friends/requests/{third}/accept"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["request"]["status"], "accepted");
    let (_, body) = app.get("/api/friends", &alice).await;
    assert_eq!(body["friends"][0]["id"], bob.id);
    let (_, body) = app.get("/api/friends", &bob).await;
    assert_eq!(body["friends"][0]["id"], alice.id);
    let (status, body) = app
        .post(
            "/api/friends/requests",
            &alice,
            json!({ "username": "bob" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "already_friends")
    );

    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status::text FROM friend_requests ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["declined", "cancelled", "accepted"]);

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/friends/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = app.get("/api/friends", &bob).await;
    assert_eq!(body["friends"].as_array().unwrap().len(), 0);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/friends/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn friend_request_to_unknown_user_or_self_is_invalid_input() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    for username in ["ghost", "alice"] {
        let (status, body) = app
            .post(
                "/api/friends/requests",
                &alice,
                json!({ "username": username }),
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_input"),
            "{username}"
        );
    }
}

#[tokio::test]
async fn an_unfriended_direct_chat_keeps_its_history_but_takes_no_messages_until_friends_again() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    app.befriend(&alice, &bob).await;
    let chat = app.direct(&alice, &bob).await;
    let (status, _) = app.send(&alice, chat, uuid::Uuid::new_v4(), "hi").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/friends/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Neither can write, over HTTP or a socket; nothing is stored.
    let (status, body) = app
        .send(&bob, chat, uuid::Uuid::new_v4(), "still there?")
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let mut ws = app.ws(&alice).await;
    let (_, frame) = crate::ws::send(chat, "and now?");
    ws.send(&frame).await;
    let refused = ws
        .next_matching(|f| matches!(f, xfchat::protocol::ServerFrame::Error { .. }))
        .await;
    let refused = serde_json::to_value(refused).unwrap();
    assert_eq!(refused["code"], "forbidden", "{refused}");
    // Both still read the history.
    for user in [&alice, &bob] {
        let (status, body) = app
            .get(&format!("/api/chats/{chat}/messages?after_seq=0"), user)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["messages"].as_array().unwrap().len(), 1, "{body}");
    }
    // Friends again, the same chat takes messages again.
    app.befriend(&bob, &alice).await;
    let (status, _) = app.send(&bob, chat, uuid::Uuid::new_v4(), "back").await;
    assert_eq!(status, StatusCode::CREATED);
}

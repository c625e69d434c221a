use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::common::{error_code, spawn_app};

#[tokio::test]
async fn direct_chat_requires_friendship() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let path = format!("/api/chats/direct/{}", bob.id);
    let (status, body) = app.put(&path, &alice, json!({})).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );

    app.befriend(&alice, &bob).await;
    let (status, created) = app.put(&path, &alice, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["chat"]["kind"], "direct");
    assert_eq!(created["chat"]["members"].as_array().unwrap().len(), 2);
    let (status, again) = app
        .put(&format!("/api/chats/direct/{}", alice.id), &bob, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["chat"]["id"], created["chat"]["id"]);
}

#[tokio::test]
async fn group_chat_members_must_be_friends_of_the_creator() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let carol = app.signup("carol").await;
    app.befriend(&alice, &bob).await;
    let (status, _) = app
        .post(
            "/api/chats",
            &alice,
            json!({ "title": "t", "member_ids": [bob.id, carol.id] }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let chat = app.group(&alice, &[&carol]).await;
    let (status, body) = app.get(&format!("/api/chats/{chat}"), &carol).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["chat"]["kind"], "group");
    let (_, list) = app.get("/api/chats", &alice).await;
    assert_eq!(list["chats"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn non_members_get_404_on_read_send_and_history() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let mallory = app.signup("mallory").await;
    let chat = app.group(&alice, &[&bob]).await;
    let (status, _) = app.send(&alice, chat, Uuid::new_v4(), "hi").await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, body) = app.get(&format!("/api/chats/{chat}"), &mallory).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, _) = app
        .get(&format!("/api/chats/{chat}/messages"), &mallory)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.send(&mallory, chat, Uuid::new_v4(), "let me in").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            &format!("/api/chats/{chat}/read"),
            &mallory,
            json!({ "seq": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A chat that does not exist answers the same.
    let (status, _) = app.get("/api/chats/999999", &mallory).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let pool = app.db.pool().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let last_seq: i64 = sqlx::query_scalar("SELECT last_seq FROM conversations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(last_seq, 1);
}

#[tokio::test]
async fn read_marker_never_moves_backwards_and_unread_follows_it() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    for i in 0..3 {
        app.send(&alice, chat, Uuid::new_v4(), &format!("m{i}"))
            .await;
    }
    let read = format!("/api/chats/{chat}/read");
    assert_eq!(
        app.post(&read, &bob, json!({ "seq": 2 })).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.post(&read, &bob, json!({ "seq": 1 })).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = app.post(&read, &bob, json!({ "seq": 4 })).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
    let (_, body) = app.get("/api/chats", &bob).await;
    let c = &body["chats"][0];
    assert_eq!(
        (
            c["last_seq"].as_i64(),
            c["last_read_seq"].as_i64(),
            c["unread"].as_i64()
        ),
        (Some(3), Some(2), Some(1))
    );
}

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::common::{error_code, spawn_app};

#[tokio::test]
async fn put_message_twice_with_same_client_msg_id_stores_one_row_and_returns_same_seq() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    let id = Uuid::new_v4();
    let (s1, first) = app.send(&alice, chat, id, "hello").await;
    let (s2, second) = app.send(&alice, chat, id, "hello").await;
    assert_eq!(s1, StatusCode::CREATED);
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(first["message"], second["message"]);
    assert_eq!(first["message"]["seq"], 1);
    assert_eq!(first["message"]["client_msg_id"], id.to_string());

    // The same client_msg_id from another sender is another message.
    let (s3, other) = app.send(&bob, chat, id, "hello").await;
    assert_eq!(s3, StatusCode::CREATED);
    assert_eq!(other["message"]["seq"], 2);

    // ...but one sender cannot reuse it in another chat.
    let carol = app.signup("carol").await;
    let chat2 = app.group(&alice, &[&carol]).await;
    let (s4, body) = app.send(&alice, chat2, id, "hello").await;
    assert_eq!(
        (s4, error_code(&body)),
        (StatusCode::CONFLICT, "client_msg_id_reused")
    );

    let pool = app.db.pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE sender_id = $1")
        .bind(alice.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn fifty_concurrent_puts_into_one_chat_get_seqs_1_to_50_without_gap_or_duplicate() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    let sends = (0..50).map(|i| {
        let (app, sender) = (&app, if i % 2 == 0 { &alice } else { &bob });
        async move {
            app.send(sender, chat, Uuid::new_v4(), &format!("m{i}"))
                .await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    let mut seqs = BTreeSet::new();
    for (status, body) in results {
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(
            seqs.insert(body["message"]["seq"].as_i64().unwrap()),
            "duplicate seq"
        );
    }
    assert_eq!(seqs, (1..=50).collect());
    let pool = app.db.pool().await;
    let stored: Vec<i64> = sqlx::query_scalar("SELECT seq FROM messages ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored, (1..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn history_pages_forwards_and_backwards_in_seq_order() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    for i in 1..=7 {
        app.send(&alice, chat, Uuid::new_v4(), &format!("m{i}"))
            .await;
    }
    let seqs = |body: &serde_json::Value| -> Vec<i64> {
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect()
    };
    let base = format!("/api/chats/{chat}/messages");
    let (_, all) = app.get(&base, &bob).await;
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5, 6, 7]);
    let (_, page) = app.get(&format!("{base}?after_seq=2&limit=3"), &bob).await;
    assert_eq!(seqs(&page), [3, 4, 5]);
    let (_, page) = app.get(&format!("{base}?after_seq=5&limit=3"), &bob).await;
    assert_eq!(seqs(&page), [6, 7]);
    let (_, page) = app.get(&format!("{base}?before_seq=6&limit=3"), &bob).await;
    assert_eq!(
        seqs(&page),
        [3, 4, 5],
        "the newest page before 6, oldest first"
    );
    let (_, page) = app.get(&format!("{base}?before_seq=3&limit=3"), &bob).await;
    assert_eq!(seqs(&page), [1, 2]);
    let (_, page) = app
        .get(&format!("{base}?after_seq=1&before_seq=4"), &bob)
        .await;
    assert_eq!(seqs(&page), [2, 3]);
    let (status, body) = app.get(&format!("{base}?limit=abc"), &bob).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
    let (status, _) = app.get(&format!("{base}?limit=0"), &bob).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn empty_or_oversized_message_bodies_are_invalid_input_and_store_nothing() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    for body in ["   ".to_owned(), "x".repeat(9 * 1024)] {
        let (status, res) = app.send(&alice, chat, Uuid::new_v4(), &body).await;
        assert_eq!(
            (status, error_code(&res)),
            (StatusCode::BAD_REQUEST, "invalid_input")
        );
    }
    let (status, res) = app
        .put(
            &format!("/api/chats/{chat}/messages/not-a-uuid"),
            &alice,
            json!({ "body": "hi" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&res)),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
    let pool = app.db.pool().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

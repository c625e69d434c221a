//! Message search: only the chats the user is in now, messages as they are now, ranked, paged,
//! highlighted in plain pieces.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{error_code, spawn_app, TestApp, User};

async fn search(app: &TestApp, user: &User, query: &str) -> (StatusCode, Value) {
    let q: String = query.bytes().map(|b| format!("%{b:02X}")).collect();
    app.get(&format!("/api/search?q={q}"), user).await
}

fn bodies(found: &Value) -> Vec<&str> {
    found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"]["body"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn search_finds_words_in_my_chats_best_first_highlighted_and_never_another_chat() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let (carol, dave) = (app.signup("carol").await, app.signup("dave").await);
    let ours = app.group(&alice, &[&bob]).await;
    let theirs = app.group(&carol, &[&dave]).await;
    app.say(&alice, ours, "the quick brown fox").await;
    app.say(&bob, ours, "a lazy dog").await;
    app.say(&alice, ours, "Fox and fox again, said the fox")
        .await;
    app.say(&alice, ours, "привет мир").await;
    app.say(&carol, theirs, "the fox is a secret").await;

    let (status, found) = search(&app, &bob, "fox").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        bodies(&found),
        vec!["Fox and fox again, said the fox", "the quick brown fox"],
        "the most matches first, and nothing of carol's chat"
    );
    let first = &found["results"][0];
    assert_eq!(first["message"]["chat_id"], ours);
    assert_eq!(first["highlight"][0], json!({"text": "Fox", "match": true}));
    assert_eq!(
        first["highlight"][1],
        json!({"text": " and ", "match": false})
    );
    assert_eq!(found["next_offset"], Value::Null);
    let (_, found) = search(&app, &bob, "привет").await;
    assert_eq!(bodies(&found), vec!["привет мир"]);
    let (_, found) = search(&app, &bob, "\"brown fox\" -lazy").await;
    assert_eq!(bodies(&found), vec!["the quick brown fox"]);
    let (_, found) = search(&app, &dave, "fox").await;
    assert_eq!(bodies(&found), vec!["the fox is a secret"]);

    // Removed from the chat, bob finds nothing of it any more.
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/chats/{ours}/members/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert!(status.is_success());
    let (_, found) = search(&app, &bob, "fox").await;
    assert_eq!(bodies(&found), Vec::<&str>::new());
}

#[tokio::test]
async fn search_sees_the_edited_text_never_a_deleted_message_and_pages() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let seq = app.say(&alice, chat, "meet at noon").await;
    let gone = app.say(&alice, chat, "meet at the secret place").await;
    let path = |s: i64| format!("/api/chats/{chat}/messages/{s}");
    app.call(
        Method::PATCH,
        &path(seq),
        Some(&alice.token),
        Some(json!({"body": "gather at noon"})),
    )
    .await;
    app.call(Method::DELETE, &path(gone), Some(&alice.token), None)
        .await;
    let (_, found) = search(&app, &bob, "meet").await;
    assert_eq!(
        bodies(&found),
        Vec::<&str>::new(),
        "neither the old text nor a deleted one"
    );
    let (_, found) = search(&app, &bob, "gather").await;
    assert_eq!(bodies(&found), vec!["gather at noon"]);

    for i in 0..5 {
        app.say(&bob, chat, &format!("page {i}")).await;
    }
    let (_, first) = app.get("/api/search?q=page&limit=3", &bob).await;
    assert_eq!(first["results"].as_array().unwrap().len(), 3);
    assert_eq!(first["next_offset"], 3);
    let (_, rest) = app.get("/api/search?q=page&limit=3&offset=3", &bob).await;
    assert_eq!(rest["results"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next_offset"], Value::Null);

    for bad in [
        "/api/search?q=",
        "/api/search?q=%20",
        "/api/search?q=a&limit=0",
        "/api/search?q=a&limit=51",
        "/api/search?q=a&offset=-1",
        "/api/search",
        "/api/search?q=a%00b",
    ] {
        let (status, body) = app.get(bad, &bob).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_input"),
            "{bad}"
        );
    }
    let (status, _) = app
        .get(&format!("/api/search?q={}", "a".repeat(201)), &bob)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A commit that finds the search index's pending list full merges it into the index while it
/// holds its chats' rows; with PostgreSQL's default of 4 MB that took about 120 ms. The list is
/// kept short, so no commit carries more than a few milliseconds of that work.
#[tokio::test]
async fn the_search_index_merges_its_pending_list_in_small_pieces_so_no_commit_stalls_on_it() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    let pool = app.db.pool().await;
    // 600 messages of 40 distinct words each: well over a megabyte of pending entries.
    sqlx::query(
        "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body)
         SELECT $1, 1000 + g, $2, gen_random_uuid(),
                (SELECT string_agg(md5(g::text || '.' || w::text), ' ') FROM generate_series(1, 40) w)
         FROM generate_series(1, 600) g",
    )
    .bind(chat)
    .bind(alice.id)
    .execute(&pool)
    .await
    .unwrap();
    // What is still pending: merged so far by the inserts themselves, never more than the limit.
    let pending: i64 = sqlx::query_scalar("SELECT gin_clean_pending_list('messages_search')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        pending <= 20,
        "{pending} pages of the search index's pending list were left for one merge"
    );
    // And each message is found by its words: the third word of the seventh.
    let (status, found) = search(&app, &bob, "6924f66d3c42e6c8f021dc7c8693ba4c").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        found["results"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    assert_eq!(found["results"][0]["message"]["seq"], 1007, "{found}");
}

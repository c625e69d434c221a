//! Large groups: a cap on their size on every path, and membership changes that cost what they
//! change instead of one read of the whole chat per member.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{error_code, friends_of, spawn_app, spawn_app_with, TestApp};

/// Transactions committed in the test's database so far (every statement outside an explicit
/// transaction is one). A backend that has been idle reports
/// its counts up to 10 s late (PostgreSQL's PGSTAT_IDLE_INTERVAL), so the count settles first;
/// with a shorter wait the setup's commits could land in the measured window.
async fn statements(app: &TestApp) -> i64 {
    tokio::time::sleep(Duration::from_millis(11_000)).await;
    let pool = app.db.pool().await;
    sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_group_holds_at_most_its_cap_on_every_path() {
    let app = spawn_app_with(|s| s.group_max_members = 3).await;
    let alice = app.signup("alice").await;
    let ids = friends_of(&app, &alice, 3).await;
    let (status, body) = app
        .post(
            "/api/chats",
            &alice,
            json!({ "title": "big", "member_ids": ids }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "group_full")
    );
    let (status, body) = app
        .post(
            "/api/chats",
            &alice,
            json!({ "title": "full", "member_ids": &ids[..2] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let chat = body["chat"]["id"].as_i64().unwrap();
    let (status, body) = app
        .post(
            &format!("/api/chats/{chat}/members"),
            &alice,
            json!({ "user_ids": [ids[2]] }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "group_full")
    );
    let (_, body) = app.get(&format!("/api/chats/{chat}"), &alice).await;
    assert_eq!(
        body["chat"]["members"].as_array().unwrap().len(),
        3,
        "nothing changed"
    );
}

#[tokio::test]
async fn a_membership_change_in_a_large_group_costs_a_few_statements_not_one_read_per_member() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let ids = friends_of(&app, &alice, 301).await;
    let (status, body) = app
        .post(
            "/api/chats",
            &alice,
            json!({ "title": "large", "member_ids": &ids[..300] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let chat = body["chat"]["id"].as_i64().unwrap();

    let before = statements(&app).await;
    let (status, _) = app
        .post(
            &format!("/api/chats/{chat}/members"),
            &alice,
            json!({ "user_ids": [ids[300]] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/chats/{chat}/members/{}", ids[0]),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let spent = statements(&app).await - before;
    // Each change is a transaction and a read or two, whatever the size; background reads (the
    // revocation list every 2 s, the epoch every 5 s, presence every 10 s) add one or two a
    // second over the window. One read per member would be over 600.
    assert!(
        spent < 150,
        "{spent} statements for two changes to a group of 301"
    );
}

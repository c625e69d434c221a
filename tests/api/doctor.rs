//! `xfchat doctor` reports each kind of planted fault and passes a healthy database.

use std::process::Command;

use uuid::Uuid;

use crate::common::{spawn_app, TestApp, SECRET};

fn doctor(url: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xfchat"))
        .arg("doctor")
        .env_clear()
        .env("DATABASE_URL", url)
        .env("JWT_SECRET", SECRET)
        .output()
        .expect("run xfchat doctor");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A database with one chat of three messages, read up to seq 2 by its second member.
async fn with_data() -> TestApp {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    for i in 0..3 {
        app.send(&alice, chat, Uuid::new_v4(), &format!("m{i}"))
            .await;
    }
    app.post(
        &format!("/api/chats/{chat}/read"),
        &bob,
        serde_json::json!({ "seq": 2 }),
    )
    .await;
    app
}

async fn planted(fault: &str) -> (bool, String) {
    let app = with_data().await;
    let pool = app.db.pool().await;
    sqlx::raw_sql(fault)
        .execute(&pool)
        .await
        .expect("plant the fault");
    doctor(&app.db.url)
}

#[tokio::test]
async fn doctor_passes_a_healthy_database() {
    let app = with_data().await;
    let (ok, report) = doctor(&app.db.url);
    assert!(ok, "{report}");
    assert!(report.contains("no problems found"), "{report}");
}

#[tokio::test]
async fn doctor_reports_a_gap_in_seqs() {
    let (ok, report) = planted("DELETE FROM messages WHERE seq = 2").await;
    assert!(!ok);
    assert!(
        report.contains("FAIL  message seqs") && report.contains("2 messages"),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_reports_a_duplicate_seq() {
    let (ok, report) = planted(
        "ALTER TABLE messages DROP CONSTRAINT messages_conversation_seq CASCADE;
         INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body)
             SELECT conversation_id, 3, sender_id, gen_random_uuid(), 'again' FROM messages LIMIT 1;",
    )
    .await;
    assert!(!ok);
    assert!(
        report.contains("FAIL  message seqs") && report.contains("3 distinct seqs"),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_reports_orphan_rows() {
    let (ok, report) = planted(
        "SET session_replication_role = replica;
         INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body)
             VALUES (424242, 1, 1, gen_random_uuid(), 'orphan');
         INSERT INTO conversation_members (conversation_id, user_id) SELECT id, 777777 FROM conversations;",
    )
    .await;
    assert!(!ok);
    assert!(
        report.contains("FAIL  messages belong to existing chats"),
        "{report}"
    );
    assert!(
        report.contains("FAIL  members belong to existing chats and users"),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_reports_a_read_marker_beyond_the_chat() {
    let (ok, report) = planted("UPDATE conversation_members SET last_read_seq = 99").await;
    assert!(!ok);
    assert!(
        report.contains("last_read_seq 99 beyond last_seq 3"),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_reports_a_schema_behind_the_binary() {
    let (ok, report) = planted(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .await;
    assert!(!ok);
    assert!(
        report.contains("FAIL  schema") && report.contains("xfchat migrate"),
        "{report}"
    );
}

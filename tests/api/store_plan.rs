//! The group commit's lookups of earlier sends probe the unique index on messages, however the
//! connection's plans were made: PostgreSQL keeps a function's plans for a connection's life,
//! and plans made while `messages` was empty once scanned the whole table at every commit.

use sqlx::Row;
use uuid::Uuid;

use crate::common::spawn_app;

#[tokio::test]
async fn the_store_probes_the_index_for_earlier_sends_even_when_planned_on_an_empty_table() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    // One connection, as a persist worker holds one: its plans are made on the first calls,
    // while no message is stored, and kept.
    let pool = app.db.pool().await;
    let mut conn = pool.acquire().await.unwrap();
    let stats = "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = 'messages'";
    let count = |row: sqlx::postgres::PgRow| {
        (
            row.get::<i64, _>(0),
            row.get::<Option<i64>, _>(1).unwrap_or(0),
        )
    };
    let (seq_before, idx_before) = count(sqlx::query(stats).fetch_one(&mut *conn).await.unwrap());
    const CALLS: i64 = 40;
    for i in 0..CALLS {
        let rows = sqlx::query("SELECT outcome FROM xfchat_store_batch($1, $2, $3, $4, 'x', NULL)")
            .bind(vec![chat, chat])
            .bind(vec![alice.id, bob.id])
            .bind(vec![Uuid::new_v4(), Uuid::new_v4()])
            .bind(vec![format!("a {i}"), format!("b {i}")])
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let stored = rows
            .iter()
            .filter(|r| r.get::<Option<String>, _>(0).as_deref() == Some("new"));
        assert_eq!(stored.count(), 2);
    }
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    // Read from another session, after this one's counts were flushed.
    let mut reader = pool.acquire().await.unwrap();
    let (seq_after, idx_after) = count(sqlx::query(stats).fetch_one(&mut *reader).await.unwrap());
    assert!(
        seq_after - seq_before <= 2,
        "{} sequential scans of messages in {CALLS} commits",
        seq_after - seq_before
    );
    assert!(
        idx_after - idx_before >= 2 * CALLS,
        "{} index scans in {CALLS} commits",
        idx_after - idx_before
    );
}

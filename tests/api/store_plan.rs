//! The group commit's plans: made once per connection and kept (planning its large statement at
//! every commit was half of PostgreSQL's CPU per message), and so made that they read each table
//! by the batch's keys, whatever the tables held when they were made. PostgreSQL keeps a
//! function's plans for a connection's life, and plans made while `messages` was empty once
//! scanned the whole table at every commit.

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnection;
use sqlx::{Postgres, Row};
use uuid::Uuid;

use crate::common::{spawn_app, TestApp};

/// Sequential and index scans of each table so far, as this connection's statistics say.
async fn scans(conn: &mut PgConnection, tables: &[&str]) -> Vec<(i64, i64)> {
    // Counts of this session reach the shared statistics only when flushed.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let row = sqlx::query(
            "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = $1",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        out.push((row.get::<i64, _>(0), row.get::<i64, _>(1)));
    }
    out
}

/// Fails unless no table of `tables` was read whole between the two counts of [`scans`].
fn no_sequential_scans(tables: &[&str], before: &[(i64, i64)], after: &[(i64, i64)], calls: usize) {
    for ((table, b), a) in tables.iter().zip(before).zip(after) {
        let seq = a.0 - b.0;
        assert!(
            seq == 0,
            "{seq} sequential scans of {table} in {calls} commits"
        );
    }
}

/// Stores one message from each of `senders` in `chat` in one commit, on `conn`, with the
/// webhook events of both kinds, so their statements are planned and probed too.
async fn commit(conn: &mut PgConnection, chat: i64, senders: &[i64], i: usize) {
    let n = senders.len();
    // After the first commit every send answers the chat's first message, so the reply check
    // is planned and probed too.
    let replies: Vec<Option<i64>> = (0..n).map(|_| (i > 0).then_some(1)).collect();
    let rows = sqlx::query(
        "SELECT outcome FROM xfchat_store_batch($1, $2, $3, $4, $5, $6, 'x', NULL, \
             'message.offline,message.created')",
    )
    .bind(vec![chat; n])
    .bind(senders.to_vec())
    .bind((0..n).map(|_| Uuid::new_v4()).collect::<Vec<_>>())
    .bind((0..n).map(|k| format!("{i}.{k}")).collect::<Vec<_>>())
    .bind(replies)
    .bind(vec![String::new(); n])
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let stored = rows
        .iter()
        .filter(|r| r.get::<Option<String>, _>(0).as_deref() == Some("new"));
    assert_eq!(stored.count(), n, "every send stored");
}

/// Alice and bob in a new group, and one connection to its database, as a persist worker holds
/// one: its plans are made on its first calls and kept.
async fn a_group_and_one_connection() -> (TestApp, [i64; 2], i64, PoolConnection<Postgres>) {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    let conn = app.db.pool().await.acquire().await.unwrap();
    (app, [alice.id, bob.id], chat, conn)
}

#[tokio::test]
async fn the_store_probes_the_index_for_earlier_sends_even_when_planned_on_an_empty_table() {
    // The plans are made while no message is stored.
    let (_app, senders, chat, mut conn) = a_group_and_one_connection().await;
    let before = scans(&mut conn, &["messages"]).await[0];
    const CALLS: usize = 40;
    for i in 0..CALLS {
        commit(&mut conn, chat, &senders, i).await;
    }
    let after = scans(&mut conn, &["messages"]).await[0];
    let (seq, idx) = (after.0 - before.0, after.1 - before.1);
    assert!(
        seq <= 2,
        "{seq} sequential scans of messages in {CALLS} commits"
    );
    assert!(
        idx >= 2 * CALLS as i64,
        "{idx} index scans in {CALLS} commits"
    );
}

#[tokio::test]
async fn the_store_probes_by_key_even_when_planned_on_tables_vacuumed_while_empty() {
    let (_app, senders, chat, mut conn) = a_group_and_one_connection().await;
    // A vacuum of a new database: the planner now knows that `messages` and `attachments` have
    // no pages, instead of assuming a few, and a plan made now reads them whole if it can.
    let tables = ["messages", "attachments", "conversations"];
    sqlx::query("VACUUM (ANALYZE) messages, attachments, conversations")
        .execute(&mut *conn)
        .await
        .unwrap();
    let before = scans(&mut conn, &tables).await;
    const CALLS: usize = 40;
    for i in 0..CALLS {
        commit(&mut conn, chat, &senders, i).await;
    }
    let after = scans(&mut conn, &tables).await;
    no_sequential_scans(&tables, &before, &after, CALLS);
    let idx = after[0].1 - before[0].1;
    assert!(
        idx >= 2 * CALLS as i64,
        "{idx} index scans of messages in {CALLS} commits"
    );
}

#[tokio::test]
async fn the_store_keeps_its_plans_and_they_probe_by_key_after_the_tables_grew() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    app.befriend(&alice, &bob).await;
    let chat = app.direct(&alice, &bob).await;
    let pool = app.db.pool().await;
    // Both functions keep one plan per statement instead of planning at every call.
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT p.proname FROM pg_proc p WHERE p.proname IN ('xfchat_store_messages', 'xfchat_store_batch')
           AND 'plan_cache_mode=force_generic_plan' = ANY (p.proconfig) ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // Each in its versions: the batch with webhook events and with attachments, and the two
    // that nodes not yet upgraded call.
    assert_eq!(
        kept,
        [
            vec!["xfchat_store_batch"; 4],
            vec!["xfchat_store_messages"; 3]
        ]
        .concat()
    );
    // Plans made on one connection while the tables are nearly empty...
    let mut conn = pool.acquire().await.unwrap();
    for i in 0..10 {
        commit(&mut conn, chat, &[alice.id, bob.id], i).await;
    }
    // ...then the tables grow under them: thousands of accounts, friendships and blocks.
    sqlx::query(
        "WITH u AS (INSERT INTO users (username, display_name, password_hash)
                    SELECT 'grown' || g, 'grown', '-' FROM generate_series(1, 4000) g RETURNING id),
              pairs AS (SELECT id, lead(id) OVER (ORDER BY id) AS next FROM u),
              f AS (INSERT INTO friendships (user_low, user_high)
                    SELECT id, next FROM pairs WHERE next IS NOT NULL)
         INSERT INTO blocks (blocker_id, blocked_id)
         SELECT next, id FROM pairs WHERE next IS NOT NULL",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("ANALYZE users, friendships, blocks")
        .execute(&mut *conn)
        .await
        .unwrap();
    let tables = ["friendships", "blocks", "messages", "conversation_members"];
    let before = scans(&mut conn, &tables).await;
    const CALLS: usize = 20;
    for i in 0..CALLS {
        commit(&mut conn, chat, &[alice.id, bob.id], 100 + i).await;
    }
    let after = scans(&mut conn, &tables).await;
    no_sequential_scans(&tables, &before, &after, CALLS);
    for ((table, b), a) in tables.iter().zip(&before).zip(&after) {
        assert!(a.1 > b.1, "{table} was read by its index");
    }
}

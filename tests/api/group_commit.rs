//! Group commit: the dispatcher gathers every chat's sends into few commits, a send waits at
//! most the linger for company, and each chat's sends keep their order.

use std::time::Duration;

use xfchat::protocol::ServerFrame;

use uuid::Uuid;

use crate::common::{spawn_app_config, TestApp, TestDb, User};
use crate::ws::send;

/// How many commits stored the messages sent as `ids`: the rows of one commit share its
/// transaction's start time. Read from the test's own database, unlike the persist metrics,
/// which every server in the test process shares.
pub async fn commits_that_stored(db: &TestDb, ids: &[Uuid]) -> i64 {
    let pool = db.pool().await;
    let (stored, commits): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT created_at) FROM messages WHERE client_msg_id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, ids.len() as i64, "every send was stored");
    commits
}

/// A server with four persist workers and a linger of `linger_us`, and alice in two chats (one
/// with bob, one with carol).
async fn alice_in_two_chats(linger_us: u64) -> (TestApp, User, [i64; 2]) {
    let app = spawn_app_config(
        |s| {
            s.persist_linger_us = linger_us;
            s.persist_workers = 4;
        },
        |_| {},
    )
    .await;
    let (alice, bob, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("carol").await,
    );
    let chats = [
        app.group(&alice, &[&bob]).await,
        app.group(&alice, &[&carol]).await,
    ];
    (app, alice, chats)
}

#[tokio::test]
async fn sends_that_come_within_the_linger_share_one_commit_and_keep_their_order() {
    let (app, alice, chats) = alice_in_two_chats(2_000_000).await;
    let mut a = app.ws(&alice).await;
    // Ten sends into two chats, 20 ms apart: without the linger each would be its own commit.
    let mut ids = Vec::new();
    for i in 0..10 {
        let (id, frame) = send(chats[i % 2], &format!("m{i}"));
        a.send(&frame).await;
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seqs = [Vec::new(), Vec::new()];
    for id in &ids {
        match tokio::time::timeout(Duration::from_secs(10), a.next()).await {
            Ok(ServerFrame::Ack {
                client_msg_id,
                message,
            }) => {
                assert_eq!(client_msg_id, *id, "acks come in the order of the sends");
                let chat = chats.iter().position(|c| *c == message.chat_id.0).unwrap();
                seqs[chat].push(message.seq);
            }
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    assert_eq!(seqs, [vec![1, 2, 3, 4, 5], vec![1, 2, 3, 4, 5]]);
    assert_eq!(
        commits_that_stored(&app.db, &ids).await,
        1,
        "one commit carried all ten sends"
    );
}

#[tokio::test]
async fn a_batch_that_fills_is_committed_without_waiting_for_the_linger() {
    let app = spawn_app_config(
        |s| {
            s.persist_linger_us = 60_000_000;
            s.persist_batch = 4;
        },
        |_| {},
    )
    .await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    for i in 0..4 {
        a.send(&send(chat, &format!("m{i}")).1).await;
    }
    for seq in 1..=4 {
        match tokio::time::timeout(Duration::from_secs(10), a.next()).await {
            Ok(ServerFrame::Ack { message, .. }) => assert_eq!(message.seq, seq),
            other => panic!("a full batch is committed at once, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_send_to_another_chat_is_not_held_behind_a_chat_whose_commit_waits() {
    let (app, alice, [held, free]) = alice_in_two_chats(1_000).await;
    let mut a = app.ws(&alice).await;
    // The first chat's row is locked, so its commit waits in PostgreSQL.
    let pool = app.db.pool().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE")
        .bind(held)
        .execute(&mut *lock)
        .await
        .unwrap();
    let (first, frame) = send(held, "first");
    a.send(&frame).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A second send to the held chat waits for the first's commit: every waiting send's chat
    // is in a commit.
    let (second, frame) = send(held, "second");
    a.send(&frame).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A send to the other chat is committed meanwhile.
    let (other, frame) = send(free, "other");
    a.send(&frame).await;
    match tokio::time::timeout(Duration::from_secs(5), a.next()).await {
        Ok(ServerFrame::Ack { client_msg_id, .. }) => assert_eq!(client_msg_id, other),
        other => panic!("the other chat's send is acked while the first waits, got {other:?}"),
    }
    lock.rollback().await.unwrap();
    for (id, seq) in [(first, 1), (second, 2)] {
        match tokio::time::timeout(Duration::from_secs(10), a.next()).await {
            Ok(ServerFrame::Ack {
                client_msg_id,
                message,
            }) => assert_eq!((client_msg_id, message.seq), (id, seq)),
            other => panic!("the held chat's sends are acked in order, got {other:?}"),
        }
    }
}

//! The WebSocket hub when the database goes away and when the server shuts down.

use std::collections::BTreeSet;
use std::time::Duration;

use xfchat::protocol::ServerFrame;

use crate::common::{spawn_app, spawn_app_with};
use crate::ws::{send, stored, WAIT};

#[tokio::test]
async fn losing_the_database_yields_error_frames_and_no_acks_and_sends_work_again_once_it_is_back()
{
    let app = spawn_app_with(|s| s.db_permit_timeout_ms = 500).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    app.db.accept_connections(false).await;
    let mut failed = Vec::new();
    for i in 0..3 {
        let (id, frame) = send(chat, &format!("lost {i}"));
        a.send(&frame).await;
        let ServerFrame::Error {
            code, reference, ..
        } = a.next().await
        else {
            panic!("an error, not an ack")
        };
        assert!(code == "persist_failed" || code == "overloaded", "{code}");
        assert_eq!(reference, Some(id.into()));
        failed.push(frame);
    }
    b.expect_silence(Duration::from_millis(300)).await;
    app.db.accept_connections(true).await;
    // Retrying the same sends is safe and now succeeds.
    for frame in &failed {
        a.send(frame).await;
        let ServerFrame::Ack { message, .. } = a.next().await else {
            panic!("ack after recovery")
        };
        assert_eq!(b.next().await, ServerFrame::Message { message });
    }
    assert_eq!(stored(&app).await, 3);
}

#[tokio::test]
async fn shutdown_answers_every_in_flight_send_then_closes_sockets_with_1001() {
    let mut app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    for i in 0..200 {
        a.send(&send(chat, &format!("m{i}")).1).await;
    }
    let pool = app.db.pool().await;
    app.stop().await;
    let (close, frames) = a.until_closed(WAIT).await;
    assert_eq!(u16::from(close.expect("a close frame").code), 1001);
    let acked: BTreeSet<i64> = frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Ack { message, .. } => Some(message.seq),
            _ => None,
        })
        .collect();
    let stored: BTreeSet<i64> = sqlx::query_scalar("SELECT seq FROM messages")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        acked, stored,
        "every committed message was acked before the close"
    );
    assert!(!acked.is_empty());
}

//! The catch-up path keeps moving and stays authorized: a read the database fails is retried
//! by the socket itself, pings are answered meanwhile, a removal stops a stream that is behind,
//! syncing or in its greeting at the removal's point, and a resume's cost follows its chats.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::time::Instant;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec, ErrorCode, Ref, ServerFrame};

use crate::common::{
    metrics_text, spawn_app_config, spawn_app_with, TestApp, TestDb, User, SECRET,
};
use crate::startup::{serve_binary, Process};
use crate::ws::{send, sync, Ws, WAIT};

/// A server whose sockets' next database reads fail while the returned count is above 0.
async fn app_with_failing_reads(
    tweak: impl FnOnce(&mut xfchat::config::Settings),
) -> (TestApp, Arc<AtomicUsize>) {
    let failing = Arc::new(AtomicUsize::new(0));
    let shared = failing.clone();
    let app = spawn_app_config(tweak, |c| c.faults.failing_stream_reads = shared).await;
    (app, failing)
}

async fn stored_messages(app: &TestApp, user: &User, chat: i64, n: usize) {
    for i in 0..n {
        let (status, body) = app
            .send(user, chat, uuid::Uuid::new_v4(), &format!("m{i}"))
            .await;
        assert!(status.is_success(), "{body}");
    }
}

/// Reads until the `synced` of `chat`; returns the seqs of the messages before it.
async fn until_synced(ws: &mut Ws, chat: i64) -> (Vec<i64>, i64) {
    let mut seqs = Vec::new();
    loop {
        match ws.next().await {
            ServerFrame::Message { message } => seqs.push(message.seq),
            ServerFrame::Synced {
                chat_id, last_seq, ..
            } if chat_id == ChatId(chat) => return (seqs, last_seq),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_sync_whose_database_read_fails_is_answered_without_any_other_client_frame() {
    let (app, failing) = app_with_failing_reads(|_| {}).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    stored_messages(&app, &alice, chat, 5).await;
    let mut b = app.ws(&bob).await;
    failing.store(1, Ordering::SeqCst);
    b.send(&sync(chat, 0)).await;
    // The read fails once; the socket tries again by itself, with no frame from the client and
    // no new message to wake it.
    let (seqs, last) = until_synced(&mut b, chat).await;
    assert_eq!((seqs, last), (vec![1, 2, 3, 4, 5], 5));
    assert_eq!(failing.load(Ordering::SeqCst), 0, "the fault was hit");
}

#[tokio::test]
async fn while_a_sync_waits_for_the_database_pings_are_answered_and_the_sync_completes_by_itself() {
    let (app, failing) = app_with_failing_reads(|_| {}).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    stored_messages(&app, &alice, chat, 3).await;
    let mut b = app.ws(&bob).await;
    failing.store(usize::MAX, Ordering::SeqCst);
    b.send(&sync(chat, 0)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        let asked = Instant::now();
        b.send(&ClientFrame::Ping {
            nonce: json!(i),
            reference: None,
        })
        .await;
        match b.next().await {
            ServerFrame::Pong { nonce, .. } => assert_eq!(nonce, json!(i)),
            other => panic!("expected a pong, got {other:?}"),
        }
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "pong in {:?}",
            asked.elapsed()
        );
    }
    // The database answers again: the sync is answered within the longest backoff.
    failing.store(0, Ordering::SeqCst);
    let back = Instant::now();
    let (seqs, _) = until_synced(&mut b, chat).await;
    assert_eq!(seqs, [1, 2, 3]);
    assert!(
        back.elapsed() < Duration::from_secs(4),
        "synced {:?} after",
        back.elapsed()
    );
}

/// Alice's group with Bob and Carol.
async fn group_of_three(app: &TestApp) -> (User, User, i64) {
    let (alice, bob, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("carol").await,
    );
    let chat = app.group(&alice, &[&bob, &carol]).await;
    (alice, bob, chat)
}

async fn remove(app: &TestApp, owner: &User, chat: i64, member: &User) {
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/chats/{chat}/members/{}", member.id),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = app
        .get(&format!("/api/chats/{chat}/messages"), member)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "their history is gone");
}

/// Everything the socket gets of `chat` until it is quiet: the message seqs, and whether it
/// heard `chat_removed`. Error frames about the chat are allowed (a sync cut short).
async fn drain_chat(ws: &mut Ws, chat: i64) -> (Vec<i64>, bool) {
    let (mut seqs, mut removed) = (Vec::new(), false);
    while let Ok(frame) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        match frame {
            ServerFrame::Message { message } => {
                assert!(!removed, "seq {} after chat_removed", message.seq);
                seqs.push(message.seq);
            }
            ServerFrame::ChatRemoved { chat_id } if chat_id == ChatId(chat) => removed = true,
            ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::NotFound),
            ServerFrame::Chat { .. } | ServerFrame::Synced { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    (seqs, removed)
}

/// Alice's `n` messages of about 8 KB while Bob reads nothing, over her socket.
async fn flood(app: &TestApp, alice: &User, chat: i64, n: usize) {
    let a = app.ws(alice).await;
    let codec = a.codec;
    let (mut sink, mut stream) = a.stream.split();
    let body = "x".repeat(8000);
    let sending = async {
        for _ in 0..n {
            sink.send(codec.encode(&send(chat, &body).1)).await.unwrap();
        }
    };
    let acking = async {
        let mut acks = 0;
        while acks < n {
            let msg = tokio::time::timeout(WAIT, stream.next())
                .await
                .expect("an ack in time")
                .unwrap()
                .unwrap();
            if let Ok(ServerFrame::Ack { .. }) = Codec::decode(&msg) {
                acks += 1;
            }
        }
    };
    tokio::join!(sending, acking);
}

/// A server process (this build's, or `XFCHAT_TEST_BIN`) on a fresh database with `extra`
/// settings; it lives as long as the returned process.
async fn serve(extra: &[(&str, &str)]) -> (TestApp, Process) {
    let db = TestDb::create().await;
    let mut env = vec![
        ("JWT_SECRET", SECRET),
        ("DATABASE_URL", db.url.as_str()),
        ("XFCHAT_SIGNUP_RATE_PER_MIN", "0"),
        ("XFCHAT_SOCIAL_RATE_PER_MIN", "0"),
    ];
    env.extend_from_slice(extra);
    let (server, base) = serve_binary(&["serve"], &env).await;
    (TestApp::at(&base, db), Process(server))
}

/// A server whose sockets fall behind after 16 queued messages, with nothing else in the way.
async fn small_queues() -> (TestApp, Process) {
    serve(&[
        ("XFCHAT_WS_QUEUE_FRAMES", "16"),
        ("XFCHAT_WS_QUEUE_BYTES", "65536"),
        ("XFCHAT_USER_RATE", "0"),
        ("XFCHAT_WS_STALL_TIMEOUT_MS", "300000"),
        ("XFCHAT_WS_PING_INTERVAL_MS", "300000"),
    ])
    .await
}

#[tokio::test]
async fn a_member_removed_while_behind_hears_nothing_committed_after_the_removal() {
    let (app, _server) = small_queues().await;
    let (alice, bob, chat) = group_of_three(&app).await;
    let mut b = app.ws(&bob).await;
    b.send(&sync(chat, 0)).await;
    assert!(matches!(b.next().await, ServerFrame::Synced { .. }));
    flood(&app, &alice, chat, 800).await;
    remove(&app, &alice, chat, &bob).await;
    stored_messages(&app, &alice, chat, 5).await;
    let (seqs, removed) = drain_chat(&mut b, chat).await;
    assert!(removed, "Bob hears chat_removed");
    assert!(
        seqs.iter().all(|&s| s <= 800),
        "nothing after the removal: {:?}",
        seqs.iter().filter(|&&s| s > 800).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "a prefix"
    );
}

#[tokio::test]
async fn a_member_removed_while_syncing_hears_nothing_committed_after_the_removal() {
    let (app, _server) = small_queues().await;
    let (alice, bob, chat) = group_of_three(&app).await;
    // 16 MB: more than the socket's buffers hold, so the sync is under way at the removal.
    flood(&app, &alice, chat, 2000).await;
    // Bob syncs from the start and reads nothing: his sync is under way when he is removed.
    let mut b = app.ws(&bob).await;
    b.send(&sync(chat, 0)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    remove(&app, &alice, chat, &bob).await;
    stored_messages(&app, &alice, chat, 5).await;
    let (seqs, removed) = drain_chat(&mut b, chat).await;
    assert!(removed, "Bob hears chat_removed");
    assert!(seqs.len() < 2000, "the sync was cut short: {}", seqs.len());
    assert!(seqs.iter().all(|&s| s <= 2000), "nothing after the removal");
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "a prefix"
    );
}

#[tokio::test]
async fn a_member_removed_during_the_greeting_hears_nothing_committed_after_the_removal() {
    let (app, _server) = small_queues().await;
    let (alice, bob, chat) = group_of_three(&app).await;
    // Bob's new socket says nothing: live messages are held for its first frame.
    let mut b = app.ws(&bob).await;
    stored_messages(&app, &alice, chat, 3).await;
    remove(&app, &alice, chat, &bob).await;
    stored_messages(&app, &alice, chat, 5).await;
    let (seqs, removed) = drain_chat(&mut b, chat).await;
    assert!(removed, "Bob hears chat_removed");
    assert!(
        seqs.iter().all(|&s| s <= 3),
        "nothing after the removal: {seqs:?}"
    );
}

#[tokio::test]
async fn a_resume_of_1000_chats_one_is_not_in_costs_one_query_and_names_each_chat_in_its_error() {
    // A server process of its own: in-process servers share one metrics registry.
    let (app, _server) = serve(&[("XFCHAT_USER_RATE", "1000")]).await;
    let bob = app.signup("bob").await;
    let mut b = app.ws(&bob).await;
    let queries = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("xfchat_db_operation_seconds_count{")
                    && l.contains("operation=\"sync\"")
            })
            .map_or(0.0, |l| {
                l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
            })
    };
    let before = queries(&metrics_text(&app.base).await);
    let positions = (1..=1000).map(|c| (ChatId(1_000_000 + c), 0)).collect();
    let asked = Instant::now();
    b.send(&ClientFrame::Resume {
        epoch: None,
        positions,
        reference: Some(Ref::Text("r1".into())),
    })
    .await;
    let mut named = std::collections::BTreeSet::new();
    while named.len() < 1000 {
        match b.next().await {
            ServerFrame::Error {
                code,
                reference,
                chat_id,
                ..
            } => {
                assert_eq!(code, ErrorCode::NotFound);
                assert_eq!(reference, Some(Ref::Text("r1".into())));
                named.insert(chat_id.expect("the error names its chat"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let took = asked.elapsed();
    // Histogram samples reach /metrics every 5 s: wait for the resume's, then for any other.
    let deadline = Instant::now() + WAIT;
    while queries(&metrics_text(&app.base).await) == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = queries(&metrics_text(&app.base).await);
    eprintln!("a 1000-chat resume of unknown chats answered in {took:?}");
    assert_eq!(
        after - before,
        1.0,
        "one query for the whole resume ({before} → {after})"
    );
}

#[tokio::test]
async fn a_resume_costs_the_user_s_budget_by_the_chats_it_names() {
    // 10 a second, burst 20: a resume of 1,000 chats takes what the burst holds.
    let app = spawn_app_with(|s| s.user_rate = 10).await;
    let bob = app.signup("bob").await;
    let mut b = app.ws(&bob).await;
    let positions: std::collections::BTreeMap<_, _> =
        (1..=1000).map(|c| (ChatId(1_000_000 + c), 0)).collect();
    b.send(&ClientFrame::Resume {
        epoch: None,
        positions: positions.clone(),
        reference: Some(Ref::Number(1)),
    })
    .await;
    for _ in 0..1000 {
        assert!(matches!(
            b.next().await,
            ServerFrame::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ));
    }
    b.send(&ClientFrame::Resume {
        epoch: None,
        positions,
        reference: Some(Ref::Number(2)),
    })
    .await;
    match b.next().await {
        ServerFrame::Error {
            code,
            reference,
            retry_after_ms,
            ..
        } => {
            assert_eq!(
                (code, reference),
                (ErrorCode::RateLimited, Some(Ref::Number(2)))
            );
            assert!(retry_after_ms.is_some_and(|ms| ms > 0), "a retry hint");
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
}

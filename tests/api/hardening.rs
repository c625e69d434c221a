//! No user can hurt another user's sends: bad input is refused alone, seq arithmetic cannot
//! overflow, and a bug in a connection task or a persist worker is contained.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec, ServerFrame};

use crate::common::{error_code, spawn_app, spawn_app_config};
use crate::ws::{send, stored, sync, Ws, WAIT};

/// Sends `frames` pipelined and collects one answer per send: its ack seq or its error code.
async fn answers(
    ws: &mut Ws,
    frames: &[(Uuid, ClientFrame)],
) -> HashMap<Uuid, Result<i64, String>> {
    for (_, frame) in frames {
        ws.send(frame).await;
    }
    let mut got = HashMap::new();
    while got.len() < frames.len() {
        match ws.next().await {
            ServerFrame::Ack {
                client_msg_id,
                message,
            } => got.insert(client_msg_id, Ok(message.seq)),
            ServerFrame::Error {
                code,
                reference: Some(reference),
                ..
            } => got.insert(reference.send_id().unwrap(), Err(code.to_string())),
            ServerFrame::Message { .. } => None,
            other => panic!("unexpected {other:?}"),
        };
    }
    got
}

#[tokio::test]
async fn a_nul_body_in_the_middle_of_a_pipelined_batch_is_refused_alone() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut a = app.ws_with(&alice, codec).await;
        let frames: Vec<_> = (0..60)
            .map(|i| {
                send(
                    chat,
                    &if i == 30 {
                        "nul \u{0} here".into()
                    } else {
                        format!("m{i}")
                    },
                )
            })
            .collect();
        let got = answers(&mut a, &frames).await;
        for (i, (id, _)) in frames.iter().enumerate() {
            match (i, &got[id]) {
                (30, Err(code)) => assert_eq!(code, "invalid_input"),
                (30, other) => panic!("the NUL send was answered {other:?}"),
                (_, answer) => assert!(answer.is_ok(), "send {i}: {answer:?}"),
            }
        }
    }
    assert_eq!(stored(&app).await, 118);
    let (status, body) = app.send(&alice, chat, Uuid::new_v4(), "a\u{0}b").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
    assert_eq!(stored(&app).await, 118);
}

#[tokio::test]
async fn a_send_the_database_refuses_fails_alone_and_every_other_send_in_its_batch_is_stored() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    // A constraint the edge checks know nothing about stands in for any value PostgreSQL
    // refuses: the group commit has to find the one send at fault.
    let pool = app.db.pool().await;
    sqlx::query("ALTER TABLE messages ADD CONSTRAINT no_poison CHECK (body <> 'poison')")
        .execute(&pool)
        .await
        .unwrap();
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    let frames: Vec<_> = (0..100)
        .map(|i| {
            send(
                chat,
                &if i % 37 == 5 {
                    "poison".into()
                } else {
                    format!("m{i}")
                },
            )
        })
        .collect();
    let got = answers(&mut a, &frames).await;
    let mut acked = Vec::new();
    for (i, (id, _)) in frames.iter().enumerate() {
        match &got[id] {
            Err(code) if i % 37 == 5 => assert_eq!(code, "invalid_input"),
            Ok(seq) if i % 37 != 5 => acked.push(*seq),
            other => panic!("send {i}: {other:?}"),
        }
    }
    assert_eq!(
        acked,
        (1..=97).collect::<Vec<_>>(),
        "acked in send order, gapless"
    );
    let seqs = crate::ws::read_seqs(&mut b, 97).await;
    assert_eq!(
        seqs, acked,
        "the other member got every stored message in order"
    );
}

#[tokio::test]
async fn reusing_a_client_msg_id_in_two_chats_committed_at_once_refuses_one_and_hurts_no_one_else()
{
    let app = spawn_app().await;
    let (alice, bob, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("carol").await,
    );
    let one = app.group(&alice, &[&bob, &carol]).await;
    let two = app.group(&alice, &[]).await;
    let mut a1 = app.ws(&alice).await;
    let mut a2 = app.ws(&alice).await;
    let mut c = app.ws(&carol).await;
    // Chat one's commit is held (at the seq update) while another worker commits chat two's send
    // with the same sender and client_msg_id: the two commits overlap, as they do under load.
    let pool = app.db.pool().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE")
        .bind(one)
        .execute(&mut *lock)
        .await
        .unwrap();
    let reused = Uuid::new_v4();
    let frame = |chat: i64| ClientFrame::Send {
        chat_id: ChatId(chat),
        client_msg_id: reused,
        body: "reused".into(),
        reply_to: None,
        attachments: Vec::new(),
    };
    let carols: Vec<_> = (0..20).map(|i| send(one, &format!("carol {i}"))).collect();
    for (_, f) in &carols {
        c.send(f).await;
    }
    a1.send(&frame(one)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a2.send(&frame(two)).await;
    match a2.next().await {
        ServerFrame::Ack { client_msg_id, .. } => assert_eq!(client_msg_id, reused),
        other => panic!("the first use is stored, got {other:?}"),
    }
    lock.commit().await.unwrap();
    loop {
        match a1.next().await {
            ServerFrame::Message { .. } => continue,
            ServerFrame::Error {
                code, reference, ..
            } => {
                assert_eq!(
                    (code.as_str(), reference),
                    ("client_msg_id_reused", Some(reused.into()))
                );
                break;
            }
            other => panic!("the reuse is refused, got {other:?}"),
        }
    }
    let got = answers(&mut c, &carols).await;
    assert!(got.values().all(Result::is_ok), "carol's sends: {got:?}");
}

#[tokio::test]
async fn a_sync_from_the_largest_seq_is_empty_and_live_delivery_continues() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    app.send(&alice, chat, Uuid::new_v4(), "before").await;
    let mut b = app.ws(&bob).await;
    b.send(&sync(chat, i64::MAX)).await;
    match b.next().await {
        ServerFrame::Synced { last_seq, .. } => assert_eq!(last_seq, 1, "the chat's end"),
        other => panic!("expected synced, got {other:?}"),
    }
    app.send(&alice, chat, Uuid::new_v4(), "after").await;
    match b.next().await {
        ServerFrame::Message { message } => assert_eq!(message.seq, 2),
        other => panic!("expected the live message, got {other:?}"),
    }
    let (status, body) = app
        .get(
            &format!(
                "/api/chats/{chat}/messages?after_seq={}&limit={}",
                i64::MAX,
                i64::MAX
            ),
            &bob,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["messages"], json!([]));
}

#[tokio::test]
async fn nul_in_any_text_field_is_invalid_input_and_changes_nothing() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    app.befriend(&alice, &bob).await;
    let nul = "a\u{0}b";
    let cases = [
        (
            "/api/auth/signup",
            None,
            json!({"username": "carol", "password": "correct horse", "display_name": nul}),
        ),
        (
            "/api/auth/signup",
            None,
            json!({"username": nul, "password": "correct horse"}),
        ),
        (
            "/api/auth/login",
            None,
            json!({"username": nul, "password": "correct horse"}),
        ),
        (
            "/api/friends/requests",
            Some(&alice),
            json!({"username": nul}),
        ),
        (
            "/api/chats",
            Some(&alice),
            json!({"title": nul, "member_ids": [bob.id]}),
        ),
    ];
    for (path, user, body) in cases {
        let token = user.map(|u| u.token.as_str());
        let (status, answer) = app
            .call(Method::POST, path, token, Some(body.clone()))
            .await;
        assert_eq!(
            (status, error_code(&answer)),
            (StatusCode::BAD_REQUEST, "invalid_input"),
            "{path} {body}"
        );
    }
    let pool = app.db.pool().await;
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users WHERE id <> 0), (SELECT count(*) FROM conversations)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counts, (2, 0));
}

#[tokio::test]
async fn a_panicking_connection_task_closes_its_socket_with_1011_and_frees_its_slot() {
    let app = spawn_app_config(
        |s| s.ws_max_per_user = 1,
        |c| c.faults.connection_panic_body = Some("boom".into()),
    )
    .await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    a.send(&send(chat, "boom").1).await;
    let (close, _) = a.until_closed(WAIT).await;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1011));
    // With one socket allowed per user, a new one only connects once the slot was released.
    let mut again = app.ws(&alice).await;
    let (id, frame) = send(chat, "still here");
    again.send(&frame).await;
    match again.next().await {
        ServerFrame::Ack { client_msg_id, .. } => assert_eq!(client_msg_id, id),
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[tokio::test]
async fn a_panicking_persist_worker_is_restarted_and_answers_its_sends() {
    let app = spawn_app_config(
        |s| s.persist_workers = 1,
        |c| c.faults.persist_panic_body = Some("boom".into()),
    )
    .await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    let (id, frame) = send(chat, "boom");
    a.send(&frame).await;
    match a.next().await {
        ServerFrame::Error {
            code, reference, ..
        } => {
            assert_eq!(
                (code.as_str(), reference),
                ("persist_failed", Some(id.into()))
            )
        }
        other => panic!("expected persist_failed, got {other:?}"),
    }
    for i in 0..3 {
        let (id, frame) = send(chat, &format!("after {i}"));
        a.send(&frame).await;
        match tokio::time::timeout(Duration::from_secs(5), a.next()).await {
            Ok(ServerFrame::Ack { client_msg_id, .. }) => assert_eq!(client_msg_id, id),
            other => panic!("expected an ack from the restarted worker, got {other:?}"),
        }
    }
    let metrics = app.get_raw("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("xfchat_persist_worker_restarts_total"),
        "restarts are counted"
    );
}

//! The WebSocket hub's guarantees, each a test on real sockets against a fresh database.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec, ServerFrame};

use crate::common::{spawn_app, spawn_app_with, TestApp};
use crate::ws::{Ws, WAIT};

fn send(chat: i64, body: &str) -> (Uuid, ClientFrame) {
    let id = Uuid::new_v4();
    (
        id,
        ClientFrame::Send {
            chat_id: ChatId(chat),
            client_msg_id: id,
            body: body.to_owned(),
        },
    )
}

fn sync(chat: i64, after_seq: i64) -> ClientFrame {
    ClientFrame::Sync {
        chat_id: ChatId(chat),
        after_seq,
        limit: None,
    }
}

/// Reads message frames of `chat` until `synced` or `want` messages; returns their seqs.
async fn read_seqs(ws: &mut Ws, want: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.len() < want {
        match ws.next().await {
            ServerFrame::Message { message } => seqs.push(message.seq),
            ServerFrame::Synced { .. } | ServerFrame::Typing { .. } | ServerFrame::Read { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    seqs
}

async fn stored(app: &TestApp) -> i64 {
    let pool = app.db.pool().await;
    sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn ack_comes_to_the_sender_and_delivery_to_every_other_connection_of_every_member() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a1 = app.ws(&alice).await;
    let mut a2 = app.ws(&alice).await;
    let mut b1 = app.ws(&bob).await;
    let mut b2 = app.ws(&bob).await;
    let (id, frame) = send(chat, "hello");
    a1.send(&frame).await;
    let ServerFrame::Ack {
        client_msg_id,
        message,
    } = a1.next().await
    else {
        panic!("ack first")
    };
    assert_eq!(
        (client_msg_id, message.seq, message.body.as_str()),
        (id, 1, "hello")
    );
    for ws in [&mut a2, &mut b1, &mut b2] {
        assert_eq!(
            ws.next().await,
            ServerFrame::Message {
                message: message.clone()
            }
        );
    }
    a1.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(stored(&app).await, 1);
}

#[tokio::test]
async fn json_and_msgpack_clients_talk_in_one_chat() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut json = app.ws_with(&alice, Codec::Json).await;
    let mut pack = app.ws_with(&bob, Codec::MsgPack).await;
    pack.send(&send(chat, "from msgpack").1).await;
    let ServerFrame::Ack { message: sent, .. } = pack.next().await else {
        panic!("ack")
    };
    assert_eq!(json.next().await, ServerFrame::Message { message: sent });
    json.send(&send(chat, "from json").1).await;
    let ServerFrame::Ack { message: sent, .. } = json.next().await else {
        panic!("ack")
    };
    assert_eq!(pack.next().await, ServerFrame::Message { message: sent });
    // Binary frames really are MessagePack with named fields.
    pack.send(&ClientFrame::Ping { nonce: json!(7) }).await;
    let raw = loop {
        match futures_util::StreamExt::next(&mut pack.stream)
            .await
            .unwrap()
            .unwrap()
        {
            WsMessage::Binary(b) => break b,
            _ => continue,
        }
    };
    let value: serde_json::Value = rmp_serde::from_slice(&raw).unwrap();
    assert_eq!(value, json!({ "type": "pong", "nonce": 7 }));
}

#[tokio::test]
async fn resend_with_same_client_msg_id_is_acked_with_the_original_and_not_fanned_out_again() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    let (_, frame) = send(chat, "once");
    a.send(&frame).await;
    let first = a.next().await;
    a.send(&frame).await;
    assert_eq!(
        a.next().await,
        first,
        "the retry is acked with the stored message"
    );
    let ServerFrame::Ack { message, .. } = first else {
        panic!("ack")
    };
    assert_eq!(b.next().await, ServerFrame::Message { message });
    b.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(stored(&app).await, 1);
}

#[tokio::test]
async fn reconnect_and_sync_return_exactly_the_missed_seqs() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    for i in 0..3 {
        a.send(&send(chat, &format!("m{i}")).1).await;
        a.next().await;
    }
    assert_eq!(read_seqs(&mut b, 3).await, [1, 2, 3]);
    drop(b);
    for i in 3..8 {
        a.send(&send(chat, &format!("m{i}")).1).await;
        a.next().await;
    }
    let mut b = app.ws(&bob).await;
    b.send(&sync(chat, 3)).await;
    assert_eq!(read_seqs(&mut b, 5).await, [4, 5, 6, 7, 8]);
    assert_eq!(
        b.next().await,
        ServerFrame::Synced {
            chat_id: ChatId(chat),
            last_seq: 8
        }
    );
    // Seqs this socket already had are not written twice.
    b.send(&sync(chat, 3)).await;
    assert_eq!(
        b.next().await,
        ServerFrame::Synced {
            chat_id: ChatId(chat),
            last_seq: 8
        }
    );
    // A limit cuts a sync short; `synced` says how far it got.
    b.send(&ClientFrame::Sync {
        chat_id: ChatId(chat),
        after_seq: 0,
        limit: Some(2),
    })
    .await;
    assert_eq!(read_seqs(&mut b, 2).await, [1, 2]);
    assert_eq!(
        b.next().await,
        ServerFrame::Synced {
            chat_id: ChatId(chat),
            last_seq: 2
        }
    );
}

#[tokio::test]
async fn twenty_concurrent_senders_of_fifty_messages_reach_every_member_in_seq_order() {
    let app = spawn_app().await;
    let owner = app.signup("owner").await;
    let mut senders = Vec::new();
    for i in 0..20 {
        senders.push(app.signup(&format!("user{i}")).await);
    }
    let chat = app.group(&owner, &senders.iter().collect::<Vec<_>>()).await;
    let mut listener = app.ws(&owner).await;
    let mut sockets = Vec::new();
    for user in &senders {
        sockets.push(app.ws(user).await);
    }
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for i in 0..50 {
                    ws.send(&send(chat, &format!("m{i}")).1).await;
                }
                // Each sender sees its 50 acks and everyone else's 950 messages, in seq order.
                let (mut acks, mut last) = (0, 0);
                while acks < 50 || last < 1000 {
                    let seq = match ws.next().await {
                        ServerFrame::Ack { message, .. } => {
                            acks += 1;
                            message.seq
                        }
                        ServerFrame::Message { message } => message.seq,
                        other => panic!("unexpected {other:?}"),
                    };
                    assert!(seq > last, "seq {seq} after {last}");
                    last = seq;
                }
                acks
            })
        })
        .collect();
    let seqs = read_seqs(&mut listener, 1000).await;
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    for task in tasks {
        assert_eq!(task.await.unwrap(), 50);
    }
    assert_eq!(stored(&app).await, 1000);
}

#[tokio::test]
async fn sync_racing_live_traffic_loses_and_duplicates_nothing() {
    let app = spawn_app_with(|s| s.ws_send_rate = 10_000).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    for i in 0..100 {
        a.send(&send(chat, &format!("before {i}")).1).await;
    }
    let writer = tokio::spawn(async move {
        for i in 0..200 {
            a.send(&send(chat, &format!("during {i}")).1).await;
        }
        let mut acks = 0;
        while acks < 300 {
            if let ServerFrame::Ack { .. } = a.next().await {
                acks += 1;
            }
        }
    });
    let mut b = app.ws(&bob).await;
    b.send(&sync(chat, 0)).await;
    let mut seen = Vec::new();
    let mut synced = false;
    while !(synced && seen.len() >= 300) {
        match b.next().await {
            ServerFrame::Message { message } => seen.push(message.seq),
            ServerFrame::Synced { .. } => synced = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.unwrap();
    b.expect_silence(Duration::from_millis(300)).await;
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no seq twice");
    assert_eq!(unique, (1..=300).collect(), "every seq once");
}

#[tokio::test]
async fn non_member_send_sync_read_and_typing_get_not_found_and_change_nothing() {
    let app = spawn_app().await;
    let (alice, bob, eve) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("eve").await,
    );
    let chat = app.group(&alice, &[&bob]).await;
    let mut b = app.ws(&bob).await;
    let mut e = app.ws(&eve).await;
    let (id, frame) = send(chat, "intrude");
    e.send(&frame).await;
    let frames = [
        sync(chat, 0),
        ClientFrame::Read {
            chat_id: ChatId(chat),
            seq: 0,
        },
        ClientFrame::Typing {
            chat_id: ChatId(chat),
        },
    ];
    let ServerFrame::Error {
        code, reference, ..
    } = e.next().await
    else {
        panic!("error")
    };
    assert_eq!((code.as_str(), reference), ("not_found", Some(id)));
    for frame in frames {
        e.send(&frame).await;
        let ServerFrame::Error { code, .. } = e.next().await else {
            panic!("error for {frame:?}")
        };
        assert_eq!(code, "not_found", "{frame:?}");
    }
    b.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn malformed_unknown_and_wrongly_typed_frames_get_bad_frame_and_the_socket_stays_usable() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    let id = Uuid::new_v4();
    let bad = [
        "not json".to_owned(),
        r#"{"type":"dance"}"#.to_owned(),
        r#"{"no_type":1}"#.to_owned(),
        format!(r#"{{"type":"send","chat_id":"x","client_msg_id":"{id}","body":"b"}}"#),
    ];
    for text in &bad {
        a.send_raw(WsMessage::Text(text.as_str().into())).await;
        let ServerFrame::Error { code, .. } = a.next().await else {
            panic!("error for {text}")
        };
        assert_eq!(code, "bad_frame", "{text}");
    }
    a.send_raw(WsMessage::Text(bad[3].as_str().into())).await;
    let ServerFrame::Error { reference, .. } = a.next().await else {
        panic!("error")
    };
    assert_eq!(
        reference,
        Some(id),
        "the ref is recovered when the frame names one"
    );
    a.send_raw(WsMessage::Binary(vec![0xc1, 0x00].into())).await;
    let ServerFrame::Error { code, .. } = a.next().await else {
        panic!("error")
    };
    assert_eq!(code, "bad_frame");
    let (_, frame) = send(chat, &"x".repeat(9 * 1024));
    a.send(&frame).await;
    let ServerFrame::Error { code, .. } = a.next().await else {
        panic!("error")
    };
    assert_eq!(code, "invalid_input", "a body over the message limit");
    a.send(&send(chat, "still here").1).await;
    assert!(
        matches!(a.next().await, ServerFrame::Ack { .. }),
        "the socket is still usable"
    );
    a.send(&ClientFrame::Ping {
        nonce: json!({"n": 1}),
    })
    .await;
    assert_eq!(
        a.next().await,
        ServerFrame::Pong {
            nonce: json!({"n": 1})
        }
    );
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_the_socket_with_1009() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let mut a = app.ws(&alice).await;
    a.send_raw(WsMessage::Text("x".repeat(70 * 1024).into()))
        .await;
    let (close, _) = a.until_closed(WAIT).await;
    assert_eq!(u16::from(close.expect("a close frame").code), 1009);
}

#[tokio::test]
async fn sends_over_the_rate_get_rate_limited_and_typing_is_limited_separately_and_never_stored() {
    let app = spawn_app_with(|s| {
        s.ws_send_rate = 5;
        s.ws_typing_rate = 1;
    })
    .await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    for i in 0..15 {
        a.send(&send(chat, &format!("m{i}")).1).await;
    }
    let mut codes: HashMap<String, usize> = HashMap::new();
    for _ in 0..15 {
        let code = match a.next().await {
            ServerFrame::Ack { .. } => "ack".to_owned(),
            ServerFrame::Error { code, .. } => code,
            other => panic!("{other:?}"),
        };
        *codes.entry(code).or_default() += 1;
    }
    assert!(codes["rate_limited"] >= 4, "{codes:?}");
    assert!(
        codes["ack"] >= 10,
        "the burst of twice the rate goes through: {codes:?}"
    );
    // Typing has its own bucket: the send limit did not use it up.
    a.send(&ClientFrame::Typing {
        chat_id: ChatId(chat),
    })
    .await;
    let _ = read_seqs(&mut b, codes["ack"]).await;
    assert_eq!(
        b.next().await,
        ServerFrame::Typing {
            chat_id: ChatId(chat),
            user_id: xfchat::ids::UserId(alice.id)
        }
    );
    for _ in 0..3 {
        a.send(&ClientFrame::Typing {
            chat_id: ChatId(chat),
        })
        .await;
    }
    let ServerFrame::Error { code, .. } = a.next().await else {
        panic!("error")
    };
    assert_eq!(code, "rate_limited");
    assert_eq!(stored(&app).await, codes["ack"] as i64);
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_while_another_keeps_receiving() {
    let app = spawn_app_with(|s| {
        s.ws_queue_frames = 16;
        s.message_max_bytes = 32 * 1024;
        s.ws_send_rate = 10_000;
    })
    .await;
    let (alice, bob, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("carol").await,
    );
    let chat = app.group(&alice, &[&bob, &carol]).await;
    let slow = app.ws(&bob).await; // never read
    let mut c = app.ws(&carol).await;
    let mut a = app.ws(&alice).await;
    let body = "x".repeat(30 * 1024);
    let total = 800; // 24 MiB: more than the kernel buffers between the server and `slow`
    let reader = tokio::spawn(async move { read_seqs(&mut c, total).await });
    for _ in 0..total {
        a.send(&send(chat, &body).1).await;
        assert!(matches!(a.next().await, ServerFrame::Ack { .. }));
    }
    let seqs = reader.await.unwrap();
    assert_eq!(
        seqs,
        (1..=total as i64).collect::<Vec<_>>(),
        "carol got everything in order"
    );
    let mut slow = slow;
    let (close, frames) = slow.until_closed(Duration::from_secs(30)).await;
    assert!(
        frames.len() < total,
        "the slow client was cut off before the end"
    );
    if let Some(close) = close {
        assert_eq!(
            (u16::from(close.code), close.reason.as_str()),
            (1008, "slow consumer")
        );
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_by_the_heartbeat() {
    let app = spawn_app_with(|s| {
        s.ws_ping_interval_ms = 100;
        s.ws_pong_timeout_ms = 200;
    })
    .await;
    let alice = app.signup("alice").await;
    let mut quiet = app.ws(&alice).await;
    let mut live = app.ws(&alice).await;
    // `live` answers pings (reading does); `quiet` reads nothing for a second.
    tokio::time::sleep(Duration::from_millis(100)).await;
    live.expect_silence(Duration::from_millis(1000)).await;
    let (close, _) = quiet.until_closed(WAIT).await;
    let close = close.expect("a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "heartbeat timeout")
    );
    live.send(&ClientFrame::Ping { nonce: json!(1) }).await;
    assert_eq!(live.next().await, ServerFrame::Pong { nonce: json!(1) });
}

#[tokio::test]
async fn a_bad_or_missing_token_gets_401_before_any_upgrade() {
    let app = spawn_app().await;
    let url = format!("{}/ws", app.base.replace("http://", "ws://"));
    for target in [url.clone(), format!("{url}?token=garbage")] {
        match tokio_tungstenite::connect_async(target.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), 401, "{target}")
            }
            other => panic!("{target}: expected 401, got {other:?}"),
        }
    }
    let alice = app.signup("alice").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}?token={}", alice.token))
        .await
        .expect("a token in the query string works");
    futures_util::SinkExt::send(
        &mut ws,
        WsMessage::Text(r#"{"type":"ping","nonce":1}"#.into()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn connections_per_user_and_per_server_are_capped_before_the_upgrade() {
    let app = spawn_app_with(|s| {
        s.ws_max_per_user = 2;
        s.ws_max_connections = 3;
    })
    .await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let url = format!("{}/ws", app.base.replace("http://", "ws://"));
    let status = |token: String| {
        let url = url.clone();
        async move {
            match tokio_tungstenite::connect_async(format!("{url}?token={token}")).await {
                Ok((ws, _)) => (101, Some(ws)),
                Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                    (res.status().as_u16(), None)
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    let (s1, _k1) = status(alice.token.clone()).await;
    let (s2, _k2) = status(alice.token.clone()).await;
    let (s3, _) = status(alice.token.clone()).await;
    assert_eq!((s1, s2, s3), (101, 101, 429));
    let (s4, _k4) = status(bob.token.clone()).await;
    let (s5, _) = status(bob.token.clone()).await;
    assert_eq!((s4, s5), (101, 503));
}

#[tokio::test]
async fn a_message_sent_over_http_is_fanned_out_like_one_sent_on_a_socket() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    let (status, body) = app.send(&alice, chat, Uuid::new_v4(), "over http").await;
    assert_eq!(status, StatusCode::CREATED);
    let message: xfchat::db::messages::Message =
        serde_json::from_value(body["message"].clone()).unwrap();
    assert_eq!(
        a.next().await,
        ServerFrame::Message {
            message: message.clone()
        }
    );
    assert_eq!(b.next().await, ServerFrame::Message { message });
}

#[tokio::test]
async fn read_markers_typing_new_chats_and_friend_requests_reach_the_right_sockets() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let mut b = app.ws(&bob).await;
    let mut a = app.ws(&alice).await;
    app.post(
        "/api/friends/requests",
        &alice,
        json!({ "username": "bob" }),
    )
    .await;
    let ServerFrame::FriendRequest { request } = b.next().await else {
        panic!("friend_request")
    };
    assert_eq!(request.from_username, "alice");
    app.post(
        &format!("/api/friends/requests/{}/accept", request.id),
        &bob,
        json!({}),
    )
    .await;
    assert!(matches!(a.next().await, ServerFrame::FriendRequest { .. }));
    assert!(matches!(b.next().await, ServerFrame::FriendRequest { .. }));
    let (_, body) = app
        .put(&format!("/api/chats/direct/{}", bob.id), &alice, json!({}))
        .await;
    let chat = body["chat"]["id"].as_i64().unwrap();
    let ServerFrame::Chat { chat: seen } = b.next().await else {
        panic!("chat")
    };
    assert_eq!(seen.id, ChatId(chat));
    assert!(matches!(a.next().await, ServerFrame::Chat { .. }));
    a.send(&send(chat, "hi").1).await;
    a.next().await;
    read_seqs(&mut b, 1).await;
    b.send(&ClientFrame::Read {
        chat_id: ChatId(chat),
        seq: 1,
    })
    .await;
    let read = ServerFrame::Read {
        chat_id: ChatId(chat),
        user_id: xfchat::ids::UserId(bob.id),
        seq: 1,
    };
    assert_eq!(a.next().await, read);
    assert_eq!(b.next().await, read);
}

#[tokio::test]
async fn losing_the_database_yields_error_frames_and_no_acks_and_sends_work_again_once_it_is_back()
{
    let app = spawn_app_with(|s| s.db_permit_timeout_ms = 500).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    let admin = sqlx::PgPool::connect(&crate::common::admin_url())
        .await
        .unwrap();
    let name = &app.db.name;
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&admin)
        .await
        .unwrap();
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
        assert_eq!(reference, Some(id));
        failed.push(frame);
    }
    b.expect_silence(Duration::from_millis(300)).await;
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&admin)
        .await
        .unwrap();
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

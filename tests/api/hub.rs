//! The WebSocket hub's delivery guarantees: persist then fan out, order, idempotency, resume.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec, ServerFrame};

use crate::common::{spawn_app, spawn_app_with};
use crate::ws::{read_seqs, send, stored, sync};

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
    pack.send(&ClientFrame::Ping {
        nonce: json!(7),
        reference: None,
    })
    .await;
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
            last_seq: 8,
            more: false,
            reference: None
        }
    );
    // A sync from a lower seq is an explicit request to replay from there.
    b.send(&sync(chat, 6)).await;
    assert_eq!(read_seqs(&mut b, 2).await, [7, 8]);
    assert_eq!(
        b.next().await,
        ServerFrame::Synced {
            chat_id: ChatId(chat),
            last_seq: 8,
            more: false,
            reference: None
        }
    );
    // A limit cuts a sync short; `synced` says how far it got.
    b.send(&ClientFrame::Sync {
        chat_id: ChatId(chat),
        after_seq: 0,
        limit: Some(2),
        reference: None,
    })
    .await;
    assert_eq!(read_seqs(&mut b, 2).await, [1, 2]);
    assert_eq!(
        b.next().await,
        ServerFrame::Synced {
            chat_id: ChatId(chat),
            last_seq: 2,
            more: true,
            reference: None
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
    let app = spawn_app_with(|s| s.user_rate = 10_000).await;
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
        reference: None,
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

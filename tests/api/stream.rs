//! The stream guarantee: on one socket, each chat's messages arrive in seq order, each once,
//! with no gap from the position the client asked for, however far behind it is. Every test
//! reads the raw frame order, with no buffering in the client.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec, ServerFrame};

use crate::common::{metric, spawn_app_config, spawn_app_with, TestApp, User};
use crate::ws::{send, sync, Ws, WAIT};

/// Sends `count` messages to each of `chats` from a new socket of `user`, waiting for every
/// ack, in a task of its own.
async fn sender(
    app: &TestApp,
    user: &User,
    chats: Vec<i64>,
    count: usize,
) -> tokio::task::JoinHandle<()> {
    let mut ws = app.ws(user).await;
    tokio::spawn(async move {
        for i in 0..count {
            for &chat in &chats {
                ws.send(&send(chat, &format!("m{i}")).1).await;
            }
        }
        let mut acks = 0;
        while acks < count * chats.len() {
            if let ServerFrame::Ack { .. } = ws.next().await {
                acks += 1;
            }
        }
    })
}

/// Reads frames in arrival order until each chat's last seq is `until` and `syncs` frames
/// `synced` have come, checking that every chat's messages are contiguous from
/// `from[chat] + 1`; returns how many `synced` came. A chat's `synced` may follow its last
/// message when the traffic ends before its sync does, so both conditions are waited for.
async fn read_contiguous(
    ws: &mut Ws,
    from: &BTreeMap<i64, i64>,
    until: i64,
    syncs: usize,
) -> usize {
    let mut at = from.clone();
    let mut synced = 0;
    while at.values().any(|&s| s < until) || synced < syncs {
        match ws.next().await {
            ServerFrame::Message { message } => {
                let cursor = at.get_mut(&message.chat_id.0).expect("a chat we asked for");
                assert_eq!(
                    message.seq,
                    *cursor + 1,
                    "chat {}: gap or repeat",
                    message.chat_id
                );
                *cursor = message.seq;
            }
            ServerFrame::Synced {
                chat_id, last_seq, ..
            } => {
                assert_eq!(last_seq, at[&chat_id.0], "synced marks where the stream is");
                synced += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    synced
}

#[tokio::test]
async fn a_fresh_socket_that_syncs_from_n_while_another_client_sends_receives_n_plus_1_onwards_in_order(
) {
    let app = spawn_app_with(|s| s.user_rate = 0).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    sender(&app, &alice, vec![chat], 100).await.await.unwrap();
    let more = sender(&app, &alice, vec![chat], 400).await;
    let mut b = app.ws(&bob).await;
    b.send(&sync(chat, 40)).await;
    let synced = read_contiguous(&mut b, &BTreeMap::from([(chat, 40)]), 500, 1).await;
    assert_eq!(synced, 1);
    more.await.unwrap();
    b.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn resume_for_50_chats_at_once_under_traffic_keeps_each_chat_contiguous() {
    let app = spawn_app_with(|s| s.user_rate = 0).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    app.befriend(&alice, &bob).await;
    let mut chats = Vec::new();
    for _ in 0..50 {
        let (_, body) = app
            .post(
                "/api/chats",
                &alice,
                serde_json::json!({ "title": "g", "member_ids": [bob.id] }),
            )
            .await;
        chats.push(body["chat"]["id"].as_i64().unwrap());
    }
    sender(&app, &alice, chats.clone(), 10).await.await.unwrap();
    let traffic = sender(&app, &alice, chats.clone(), 20).await;
    let positions: BTreeMap<i64, i64> = chats.iter().map(|&c| (c, c % 7)).collect();
    let mut b = app.ws(&bob).await;
    b.send(&ClientFrame::Resume {
        epoch: None,
        positions: positions.iter().map(|(&c, &p)| (ChatId(c), p)).collect(),
        reference: None,
    })
    .await;
    let synced = read_contiguous(&mut b, &positions, 30, 50).await;
    assert_eq!(synced, 50, "one synced per chat");
    traffic.await.unwrap();
}

#[tokio::test]
async fn a_reader_that_pauses_in_a_busy_room_is_caught_up_from_the_database_not_disconnected() {
    let app = spawn_app_with(|s| {
        s.ws_queue_frames = 16;
        s.ws_queue_bytes = 64 * 1024;
        s.message_max_bytes = 32 * 1024;
        s.user_rate = 0;
        // Bob pauses as long as Alice takes, which on a loaded machine can pass the default
        // stall and heartbeat bounds: this test is about catching up, not about those.
        s.ws_stall_timeout_ms = 300_000;
        s.ws_ping_interval_ms = 300_000;
    })
    .await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut b = app.ws(&bob).await;
    b.send(&sync(chat, 0)).await;
    assert!(matches!(b.next().await, ServerFrame::Synced { .. }));
    // 24 MiB while Bob reads nothing: far beyond his queue and the kernel's buffers.
    // Alice reads her acks while she sends, as a client must: 24 MiB of acks unread would
    // fill both directions' buffers, and then neither side could write.
    let a = app.ws(&alice).await;
    let codec = a.codec;
    let (mut sink, mut stream) = a.stream.split();
    let body = "x".repeat(30 * 1024);
    let sending = async {
        for _ in 0..800 {
            sink.send(codec.encode(&send(chat, &body).1)).await.unwrap();
        }
    };
    let acking = async {
        let mut acks = 0;
        while acks < 800 {
            let msg = tokio::time::timeout(WAIT, stream.next())
                .await
                .expect("an ack arrives in time")
                .expect("Alice's socket is open")
                .expect("Alice's socket reads");
            if let Ok(ServerFrame::Ack { .. }) = Codec::decode(&msg) {
                acks += 1;
            }
        }
    };
    tokio::join!(sending, acking);
    tokio::time::sleep(Duration::from_secs(2)).await;
    read_contiguous(&mut b, &BTreeMap::from([(chat, 0)]), 800, 0).await;
    b.expect_silence(Duration::from_millis(300)).await;
    let metrics = app.get_raw("/metrics").await.text().await.unwrap();
    let caught_up = metric(&metrics, "xfchat_ws_catchup_messages_total").unwrap_or(0.0);
    assert!(caught_up > 0.0, "some of it came from the database");
}

#[tokio::test]
async fn a_reader_that_reads_nothing_past_the_stall_timeout_is_closed_cleanly_with_4004() {
    let app = spawn_app_with(|s| {
        s.ws_stall_timeout_ms = 500;
        s.message_max_bytes = 32 * 1024;
        s.user_rate = 0;
    })
    .await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut stalled = app.ws(&bob).await;
    let mut a = app.ws(&alice).await;
    let body = "x".repeat(30 * 1024);
    for _ in 0..400 {
        a.send(&send(chat, &body).1).await;
        assert!(matches!(a.next().await, ServerFrame::Ack { .. }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Reading again, the client finds what was buffered and then a clean close with 4004, not
    // a reset.
    let (close, _) = stalled.until_closed(WAIT).await;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(4004));
    let metrics = app.get_raw("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("xfchat_ws_disconnects_total{reason=\"stalled\"}")),
        "the stall is counted"
    );
}

#[tokio::test]
async fn a_live_message_that_arrives_after_a_gap_is_preceded_by_the_missing_ones_from_the_database()
{
    let app = spawn_app_config(|_| {}, |c| c.faults.lost_fanout_body = Some("lost".into())).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut b = app.ws(&bob).await;
    b.send(&sync(chat, 0)).await;
    assert!(matches!(b.next().await, ServerFrame::Synced { .. }));
    for body in ["first", "lost", "lost", "after"] {
        app.send(&alice, chat, uuid::Uuid::new_v4(), body).await;
    }
    let mut got = Vec::new();
    while got.len() < 4 {
        match b.next().await {
            ServerFrame::Message { message } => got.push((message.seq, message.body)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(got[1].1, "lost", "the missed one came from the database");
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame_before_the_connection_ends() {
    let app = spawn_app_with(|_| {}).await;
    let alice = app.signup("alice").await;
    for frame in [
        Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }),
        None,
    ] {
        let mut ws = app.ws(&alice).await;
        let empty = frame.is_none();
        ws.stream.send(WsMessage::Close(frame)).await.unwrap();
        let answer = tokio::time::timeout(WAIT, ws.stream.next())
            .await
            .expect("an answer in time");
        match answer {
            Some(Ok(WsMessage::Close(echo))) => {
                if !empty {
                    assert_eq!(echo.map(|f| f.code), Some(CloseCode::Normal));
                }
            }
            other => panic!("expected the server's Close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_reconnect_storm_far_behind_catches_up_exactly_while_sends_keep_being_acked() {
    const USERS: usize = 20;
    const SOCKETS_PER_USER: usize = 10;
    const BEHIND: usize = 500;
    let app = spawn_app_with(|s| {
        s.user_rate = 0;
        s.ws_max_per_ip = 1000;
    })
    .await;
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(app.signup(&format!("user{i}")).await);
    }
    // Four chats of five members; every message a chat gets while nobody reads is missed.
    let mut chats = Vec::new();
    for group in users.chunks(5) {
        let others: Vec<&User> = group[1..].iter().collect();
        chats.push((app.group(&group[0], &others).await, group.to_vec()));
    }
    for (chat, members) in &chats {
        sender(&app, &members[0], vec![*chat], BEHIND)
            .await
            .await
            .unwrap();
    }
    // Everyone reconnects at once from position 0 while the first member keeps sending.
    let traffic: Vec<_> = {
        let mut t = Vec::new();
        for (chat, members) in &chats {
            t.push(sender(&app, &members[0], vec![*chat], 50).await);
        }
        t
    };
    let mut readers = Vec::new();
    for (chat, members) in &chats {
        for user in members {
            for _ in 0..SOCKETS_PER_USER {
                let mut ws = app.ws(user).await;
                let chat = *chat;
                readers.push(tokio::spawn(async move {
                    ws.send(&ClientFrame::Resume {
                        epoch: None,
                        positions: [(ChatId(chat), 0)].into(),
                        reference: None,
                    })
                    .await;
                    let mut at = 0;
                    // Own acks come as acks, and stand for their messages.
                    while at < (BEHIND + 50) as i64 {
                        match ws.next().await {
                            ServerFrame::Message { message } => {
                                assert_eq!(message.seq, at + 1, "gap or repeat");
                                at = message.seq;
                            }
                            ServerFrame::Ack { message, .. } => {
                                assert!(message.seq <= at + 1, "an ack past a gap");
                                at = at.max(message.seq);
                            }
                            ServerFrame::Synced { .. } => {}
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }));
            }
        }
    }
    for t in traffic {
        t.await.unwrap();
    }
    for r in readers {
        r.await.unwrap();
    }
}

#[tokio::test]
async fn protocol_violations_close_with_1002_and_invalid_utf8_with_1007() {
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::MaybeTlsStream;
    let app = spawn_app_with(|_| {}).await;
    let alice = app.signup("alice").await;
    // Client frames are masked (key 0: the payload goes as it is). The first sets a reserved
    // bit; the second is a text frame that is not UTF-8.
    let frames: [(&[u8], u16); 2] = [
        (&[0xC1, 0x80, 0, 0, 0, 0], 1002),
        (&[0x81, 0x82, 0, 0, 0, 0, 0xFF, 0xFE], 1007),
    ];
    for (bytes, code) in frames {
        let mut ws = app.ws(&alice).await;
        let MaybeTlsStream::Plain(tcp) = ws.stream.get_mut() else {
            panic!("a plain TCP stream")
        };
        tcp.write_all(bytes).await.unwrap();
        let (close, _) = ws.until_closed(WAIT).await;
        assert_eq!(close.map(|c| u16::from(c.code)), Some(code), "{bytes:x?}");
    }
}

#[tokio::test]
async fn a_resume_the_database_cannot_answer_is_retried_by_the_socket_itself_and_answered_once_it_is_back(
) {
    let app = spawn_app_with(|s| {
        s.user_rate = 0;
        s.db_permit_timeout_ms = 300;
    })
    .await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    for i in 1..=5 {
        let (status, _) = app
            .send(&alice, chat, uuid::Uuid::new_v4(), &format!("m{i}"))
            .await;
        assert!(status.is_success());
    }
    let mut b = app.ws(&bob).await;
    // The database refuses connections while the resume from 2 is asked.
    app.db.accept_connections(false).await;
    b.send(&ClientFrame::Resume {
        epoch: None,
        positions: [(ChatId(chat), 2)].into(),
        reference: None,
    })
    .await;
    b.expect_silence(Duration::from_millis(1500)).await;
    app.db.accept_connections(true).await;
    // No other frame from the client and no new message: the socket tries again by itself.
    let mut seqs = Vec::new();
    loop {
        match b.next().await {
            ServerFrame::Message { message } => seqs.push(message.seq),
            ServerFrame::Synced { last_seq, more, .. } => {
                assert_eq!((last_seq, more), (5, false));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seqs, [3, 4, 5]);
}

//! What a client library builds on: read markers that count only others' messages, syncs that
//! say where they stopped and whether more remains, a `ref` on every answer, and one rule for
//! unknown fields.

use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, ErrorCode, Ref, ServerFrame};

use crate::common::{error_code, spawn_app, TestApp, User};
use crate::ws::{read_seqs, send, sync, Ws};

async fn unread(app: &TestApp, user: &User, chat: i64) -> (i64, i64) {
    let (status, body) = app.get(&format!("/api/chats/{chat}"), user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let chat = &body["chat"];
    (
        chat["unread"].as_i64().unwrap(),
        chat["last_read_seq"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn own_messages_do_not_count_as_unread() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    for i in 0..2 {
        app.send(&bob, chat, Uuid::new_v4(), &format!("bob {i}"))
            .await;
    }
    // Alice sends over her socket and over HTTP: 50 of the chat's 52 messages are hers.
    let mut a = app.ws(&alice).await;
    for i in 0..25 {
        a.send(&send(chat, &format!("alice {i}")).1).await;
    }
    for seq in 3..28 {
        match a.next().await {
            ServerFrame::Ack { message, .. } => assert_eq!(message.seq, seq),
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    for i in 25..50 {
        app.send(&alice, chat, Uuid::new_v4(), &format!("alice {i}"))
            .await;
    }
    assert_eq!(
        unread(&app, &alice, chat).await,
        (0, 52),
        "sending moves the sender's marker to their message, past bob's two before it"
    );
    assert_eq!(unread(&app, &bob, chat).await, (50, 2), "bob read his own");
    // A resend moves nothing backwards, and others' later messages count again.
    app.send(&bob, chat, Uuid::new_v4(), "bob again").await;
    assert_eq!(unread(&app, &alice, chat).await, (1, 52));
    let (status, list) = app.get("/api/chats", &bob).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["chats"][0]["unread"], 0, "the list agrees: {list}");
}

#[tokio::test]
async fn a_sync_reports_the_position_reached_never_past_the_end_and_whether_more_remains() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    for i in 0..3 {
        app.send(&alice, chat, Uuid::new_v4(), &format!("m{i}"))
            .await;
    }
    let mut b = app.ws(&bob).await;
    let limited = |after_seq, limit| ClientFrame::Sync {
        chat_id: ChatId(chat),
        after_seq,
        limit: Some(limit),
        reference: None,
    };
    let synced = |last_seq, more| ServerFrame::Synced {
        chat_id: ChatId(chat),
        last_seq,
        more,
        reference: None,
    };
    b.send(&sync(chat, 999)).await;
    assert_eq!(b.next().await, synced(3, false), "past the end: the end");
    b.send(&limited(0, 2)).await;
    assert_eq!(read_seqs(&mut b, 2).await, [1, 2]);
    assert_eq!(b.next().await, synced(2, true), "the limit stopped it");
    b.send(&limited(2, 2)).await;
    assert_eq!(read_seqs(&mut b, 1).await, [3]);
    assert_eq!(b.next().await, synced(3, false));
    b.send(&limited(0, 3)).await;
    assert_eq!(read_seqs(&mut b, 3).await, [1, 2, 3]);
    assert_eq!(b.next().await, synced(3, false), "exactly to the end");
}

/// The next frame, which must be an error: its code and ref.
async fn error(ws: &mut Ws) -> (ErrorCode, Option<Ref>) {
    match ws.next().await {
        ServerFrame::Error {
            code, reference, ..
        } => (code, reference),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn text(s: &str) -> Option<Ref> {
    Some(Ref::Text(s.to_owned()))
}

#[tokio::test]
async fn every_client_frame_s_ref_is_echoed_in_its_answer_or_error() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    app.send(&alice, chat, Uuid::new_v4(), "hello").await;
    let mut b = app.ws(&bob).await;
    let nowhere = ChatId(chat + 1000);

    b.send(&ClientFrame::Sync {
        chat_id: ChatId(chat),
        after_seq: 0,
        limit: None,
        reference: Some(Ref::Number(7)),
    })
    .await;
    assert_eq!(read_seqs(&mut b, 1).await, [1]);
    match b.next().await {
        ServerFrame::Synced { reference, .. } => assert_eq!(reference, Some(Ref::Number(7))),
        other => panic!("expected synced, got {other:?}"),
    }
    b.send(&ClientFrame::Resume {
        epoch: None,
        positions: [(ChatId(chat), 1)].into(),
        reference: text("r1"),
    })
    .await;
    match b.next().await {
        ServerFrame::Synced { reference, .. } => assert_eq!(reference, text("r1")),
        other => panic!("expected synced, got {other:?}"),
    }
    b.send(&ClientFrame::Sync {
        chat_id: nowhere,
        after_seq: 0,
        limit: None,
        reference: text("s2"),
    })
    .await;
    assert_eq!(error(&mut b).await, (ErrorCode::NotFound, text("s2")));
    b.send(&ClientFrame::Read {
        chat_id: ChatId(chat),
        seq: 99,
        reference: text("read-1"),
    })
    .await;
    assert_eq!(
        error(&mut b).await,
        (ErrorCode::InvalidInput, text("read-1"))
    );
    b.send(&ClientFrame::Typing {
        chat_id: nowhere,
        reference: Some(Ref::Number(-3)),
    })
    .await;
    assert_eq!(
        error(&mut b).await,
        (ErrorCode::NotFound, Some(Ref::Number(-3)))
    );
    b.send(&ClientFrame::Ping {
        nonce: json!(1),
        reference: text("p"),
    })
    .await;
    assert_eq!(
        b.next().await,
        ServerFrame::Pong {
            nonce: json!(1),
            reference: text("p")
        }
    );
    // A send's reference is its client_msg_id.
    let (id, frame) = send(nowhere.0, "lost");
    b.send(&frame).await;
    assert_eq!(error(&mut b).await, (ErrorCode::NotFound, Some(id.into())));
    // A frame that cannot be read still names its ref when that field can be read.
    b.send_raw(WsMessage::Text(
        r#"{"type":"sync","chat_id":"one","after_seq":0,"ref":"bad-1"}"#.into(),
    ))
    .await;
    assert_eq!(error(&mut b).await, (ErrorCode::BadFrame, text("bad-1")));
    // A ref is the client's short name, not a payload.
    b.send(&ClientFrame::Ping {
        nonce: json!(2),
        reference: text(&"x".repeat(65)),
    })
    .await;
    assert_eq!(error(&mut b).await, (ErrorCode::InvalidInput, None));
}

#[tokio::test]
async fn unknown_fields_are_refused_on_sockets_as_over_http() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    let id = Uuid::new_v4();
    let frame = json!({
        "type": "send", "chat_id": chat, "client_msg_id": id, "body": "hi", "silent": true
    });
    a.send_raw(WsMessage::Text(frame.to_string().into())).await;
    match a.next().await {
        ServerFrame::Error {
            code,
            message,
            reference,
            ..
        } => {
            assert_eq!((code, reference), (ErrorCode::BadFrame, Some(id.into())));
            assert!(message.contains("silent"), "names the field: {message}");
        }
        other => panic!("expected bad_frame, got {other:?}"),
    }
    let (_, history) = app
        .get(&format!("/api/chats/{chat}/messages"), &alice)
        .await;
    assert_eq!(history["messages"], json!([]), "nothing was stored");

    let (status, body) = app
        .post(
            &format!("/api/chats/{chat}/read"),
            &alice,
            json!({"seq": 0, "silent": true}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_input");
    assert!(
        body.to_string().contains("silent"),
        "names the field: {body}"
    );
}

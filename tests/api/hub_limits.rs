//! The WebSocket hub's limits: membership, bad and oversized frames, rate limits, slow
//! consumers, heartbeats and connection caps.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, ServerFrame};

use crate::common::{spawn_app, spawn_app_with};
use crate::ws::{read_seqs, send, stored, sync, WAIT};

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
            reference: None,
        },
        ClientFrame::Typing {
            chat_id: ChatId(chat),
            reference: None,
        },
    ];
    let ServerFrame::Error {
        code, reference, ..
    } = e.next().await
    else {
        panic!("error")
    };
    assert_eq!((code.as_str(), reference), ("not_found", Some(id.into())));
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
        Some(id.into()),
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
        reference: None,
    })
    .await;
    assert_eq!(
        a.next().await,
        ServerFrame::Pong {
            nonce: json!({"n": 1}),
            reference: None
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
        s.user_rate = 5;
        s.ws_typing_rate = 1;
    })
    .await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    b.send(&sync(chat, 0)).await;
    assert!(matches!(b.next().await, ServerFrame::Synced { .. }));
    // 30 sends against a bucket of 10 that refills 5 a second: whatever the pace of this
    // machine, well over ten are refused.
    for i in 0..30 {
        a.send(&send(chat, &format!("m{i}")).1).await;
    }
    let mut codes: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let code = match a.next().await {
            ServerFrame::Ack { .. } => "ack".to_owned(),
            ServerFrame::Error { code, .. } => code.to_string(),
            other => panic!("{other:?}"),
        };
        *codes.entry(code).or_default() += 1;
    }
    assert!(codes["rate_limited"] >= 10, "{codes:?}");
    assert!(
        codes["ack"] >= 10,
        "the burst of twice the rate goes through: {codes:?}"
    );
    // Typing pays from the same budget, and has a per-user limit of its own besides: once the
    // budget has room again, one goes through, and the next ones past the typing limit do not.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.send(&ClientFrame::Typing {
        chat_id: ChatId(chat),
        reference: None,
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
            reference: None,
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
        (4003, "heartbeat timeout")
    );
    live.send(&ClientFrame::Ping {
        nonce: json!(1),
        reference: None,
    })
    .await;
    assert_eq!(
        live.next().await,
        ServerFrame::Pong {
            nonce: json!(1),
            reference: None
        }
    );
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
async fn pings_and_unreadable_frames_cost_from_the_user_s_budget_and_typing_is_limited_per_user() {
    let app = spawn_app_with(|s| {
        s.user_rate = 10;
        s.ws_typing_rate = 1;
    })
    .await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    // Pings of 60 KB cost 16 units each: a burst of 20 units holds one of them.
    let mut a = app.ws(&alice).await;
    let nonce = "x".repeat(60 * 1024 - 100);
    for i in 0..4 {
        a.send(&ClientFrame::Ping {
            nonce: serde_json::json!(nonce),
            reference: Some(xfchat::protocol::Ref::Number(i)),
        })
        .await;
    }
    // The first fits the burst, the second is refused; then the socket reads on only as the
    // budget refills, so the rest are served later.
    assert!(
        matches!(a.next().await, ServerFrame::Pong { .. }),
        "one large ping fits the burst"
    );
    match a.next().await {
        ServerFrame::Error {
            code,
            retry_after_ms,
            ..
        } => {
            assert_eq!(code, "rate_limited");
            assert!(retry_after_ms.is_some(), "with a retry hint");
        }
        other => panic!("{other:?}"),
    }
    for _ in 0..2 {
        assert!(matches!(
            a.next().await,
            ServerFrame::Pong { .. } | ServerFrame::Error { .. }
        ));
    }
    // Unreadable frames cost too: 30 of them against what is left.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..30 {
        a.send_raw(WsMessage::Text("{not json".into())).await;
    }
    let mut limited = 0;
    for _ in 0..30 {
        if let ServerFrame::Error { code, .. } = a.next().await {
            limited += usize::from(code == "rate_limited");
        }
    }
    assert!(limited >= 1, "{limited} of 30 refused by the budget");
    // Typing: one a second per user, over all their sockets (burst two).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut sockets = vec![a];
    for _ in 0..3 {
        sockets.push(app.ws(&alice).await);
    }
    for ws in sockets.iter_mut() {
        ws.send(&ClientFrame::Typing {
            chat_id: ChatId(chat),
            reference: Some(xfchat::protocol::Ref::Number(7)),
        })
        .await;
    }
    // Each socket hears the others' typing; the refusals are errors with the typing's ref.
    let mut refused = 0;
    for ws in sockets.iter_mut() {
        while let Ok(frame) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            match frame {
                ServerFrame::Error { code, .. } => {
                    assert_eq!(code, "rate_limited");
                    refused += 1;
                }
                ServerFrame::Typing { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(
        refused, 2,
        "four sockets share the user's two typing indicators"
    );
}

#[tokio::test]
async fn a_socket_over_its_user_s_budget_is_read_no_faster_than_the_budget_refills() {
    // 10 units a second, burst 20: 200 pings sent at once.
    let app = spawn_app_with(|s| s.user_rate = 10).await;
    let alice = app.signup("alice").await;
    let mut ws = app.ws(&alice).await;
    for i in 0..200 {
        ws.send(&ClientFrame::Ping {
            nonce: json!(i),
            reference: None,
        })
        .await;
    }
    // Within a second the burst is answered, then the first refusal, then the socket reads
    // about as fast as the budget refills; read without pause, all 200 would be answered.
    let mut answered = 0;
    let (mut pongs, mut refused) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(frame) = tokio::time::timeout_at(deadline, ws.next()).await {
        answered += 1;
        match frame {
            ServerFrame::Pong { .. } => pongs += 1,
            ServerFrame::Error { code, .. } => {
                assert_eq!(code, xfchat::protocol::ErrorCode::RateLimited);
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pongs >= 20, "the burst is served: {pongs}");
    assert!(refused >= 1, "and then refused");
    assert!(
        answered < 60,
        "{answered} of 200 frames read within a second"
    );
    // The socket is still served once the budget refills.
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
        let _ = frame;
    }
    ws.send(&ClientFrame::Ping {
        nonce: json!("later"),
        reference: None,
    })
    .await;
    loop {
        if let ServerFrame::Pong { nonce, .. } = ws.next().await {
            if nonce == json!("later") {
                break;
            }
        }
    }
}

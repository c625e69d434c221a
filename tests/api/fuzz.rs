//! Property tests over everything a client can send: the frame decoders of both codecs and the
//! HTTP JSON bodies. Whatever arrives, the answer is a clean refusal, never a panic or a 500.
//! `PROPTEST_CASES` sets the number of cases per property (CI runs the default below).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use xfchat::protocol::{ClientFrame, Codec};

use crate::common::spawn_app;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Any JSON value, nested up to a few levels, with the field names frames use.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        "[0-9a-f-]{36}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("chat_id".to_owned()),
                    Just("client_msg_id".to_owned()),
                    Just("body".to_owned()),
                    Just("after_seq".to_owned()),
                    Just("seq".to_owned()),
                    Just("limit".to_owned()),
                    ".{0,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A frame type with any mix of fields, so decoding gets past the tag and into the fields.
fn frame_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("send"),
            Just("sync"),
            Just("read"),
            Just("typing"),
            Just("ping"),
            Just("nope")
        ],
        json_value(),
    )
        .prop_map(|(kind, v)| match v {
            Value::Object(mut m) => {
                m.insert("type".into(), kind.into());
                Value::Object(m)
            }
            other => json!({ "type": kind, "chat_id": other }),
        })
}

/// Decodes `msg` as the server does for a client frame and for the error reference.
fn decode_both(msg: &WsMessage) {
    let _ = Codec::decode::<ClientFrame>(msg);
    let _ = Codec::decode::<Value>(msg);
}

#[test]
fn frame_decoders_never_panic_on_arbitrary_bytes_text_or_frame_shaped_values() {
    let mut runner = TestRunner::new(Config::with_cases(cases()));
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            decode_both(&WsMessage::Binary(bytes.clone().into()));
            decode_both(&WsMessage::Text(
                String::from_utf8_lossy(&bytes).into_owned().into(),
            ));
            Ok(())
        })
        .unwrap();
    runner
        .run(&frame_like(), |v| {
            decode_both(&Codec::Json.encode(&v));
            decode_both(&Codec::MsgPack.encode(&v));
            Ok(())
        })
        .unwrap();
}

#[test]
fn deeply_nested_and_huge_frames_are_refused_without_exhausting_the_stack() {
    for depth in [64, 1_000, 100_000] {
        let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(Codec::decode::<ClientFrame>(&WsMessage::Text(json.clone().into())).is_err());
        let _ = Codec::decode::<Value>(&WsMessage::Text(json.into()));
        // 0x91: a MessagePack array of one element, nested `depth` times.
        let mut msgpack = vec![0x91u8; depth];
        msgpack.push(0xc0);
        assert!(Codec::decode::<ClientFrame>(&WsMessage::Binary(msgpack.clone().into())).is_err());
        let _ = Codec::decode::<Value>(&WsMessage::Binary(msgpack.into()));
    }
    // An array header that promises four billion elements, with nothing behind it.
    let huge = vec![0xdd, 0xff, 0xff, 0xff, 0xff];
    assert!(Codec::decode::<ClientFrame>(&WsMessage::Binary(huge.clone().into())).is_err());
    let _ = Codec::decode::<Value>(&WsMessage::Binary(huge.into()));
}

#[tokio::test]
async fn http_json_bodies_get_a_4xx_with_the_error_shape_whatever_they_hold() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    let routes = [
        (Method::POST, "/api/auth/signup".to_owned(), false),
        (Method::POST, "/api/auth/login".to_owned(), false),
        (Method::POST, "/api/friends/requests".to_owned(), true),
        (Method::POST, "/api/chats".to_owned(), true),
        (Method::POST, format!("/api/chats/{chat}/read"), true),
        (Method::POST, format!("/api/chats/{chat}/members"), true),
        (
            Method::PUT,
            format!("/api/chats/{chat}/messages/{}", uuid::Uuid::new_v4()),
            true,
        ),
    ];
    let handle = tokio::runtime::Handle::current();
    let app = std::sync::Arc::new(app);
    let failures = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config::with_cases(cases()));
        let strategy = (0..routes.len(), json_value());
        runner.run(&strategy, |(route, body)| {
            let (method, path, auth) = &routes[route];
            let token = auth.then_some(alice.token.as_str());
            let (status, answer) =
                handle.block_on(app.call(method.clone(), path, token, Some(body.clone())));
            prop_assert!(
                status.as_u16() < 500,
                "{method} {path} {body} answered {status} {answer}"
            );
            if !status.is_success() {
                prop_assert!(answer["error"]["code"].is_string(), "{answer}");
            }
            Ok(())
        })
    })
    .await
    .unwrap();
    if let Err(e) = failures {
        panic!("{e}");
    }
}

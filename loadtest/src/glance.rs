//! The harness's light read of a server frame: the type, a message's chat, seq and body (borrowed
//! where the codec allows), an error's code and whether it answers a frame; nothing else is
//! decoded. Full decoding of every delivered frame (ids, times, the sender, the frame enum) was
//! what bounded the harness in fan-out runs.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// What the harness needs of one frame.
#[derive(Debug, PartialEq)]
pub enum Glance<'a> {
    Ack(Seen<'a>),
    Message(Seen<'a>),
    /// `answered`: the error names the frame it answers (a send's, here).
    Error {
        code: Cow<'a, str>,
        answered: bool,
    },
    Other,
}

/// A message's place and body.
#[derive(Debug, PartialEq, Deserialize)]
pub struct Seen<'a> {
    pub chat_id: i64,
    pub seq: i64,
    #[serde(borrow)]
    pub body: Cow<'a, str>,
}

/// Reads a data frame; None when it is not one the server could have sent.
pub fn glance(msg: &WsMessage) -> Option<Glance<'_>> {
    let frame: Frame = match msg {
        WsMessage::Text(text) => serde_json::from_str(text).ok()?,
        WsMessage::Binary(bytes) => {
            let mut de = rmp_serde::Deserializer::from_read_ref(&bytes[..]).with_human_readable();
            Frame::deserialize(&mut de).ok()?
        }
        _ => return None,
    };
    Some(match (&*frame.kind, frame.message) {
        ("ack", Some(Field::Message(m))) => Glance::Ack(m),
        ("message", Some(Field::Message(m))) => Glance::Message(m),
        ("error", _) => Glance::Error {
            code: frame.code?,
            answered: frame.reference.is_some(),
        },
        ("ack" | "message", _) => return None,
        _ => Glance::Other,
    })
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    message: Option<Field<'a>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, rename = "ref")]
    reference: Option<IgnoredAny>,
}

/// `message` is the message itself in `ack` and `message`, and the text of an `error`.
enum Field<'a> {
    Message(Seen<'a>),
    Text,
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message or a text")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Field<'a>, E> {
                Ok(Field::Text)
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Field<'a>, M::Error> {
                Seen::deserialize(de::value::MapAccessDeserializer::new(map)).map(Field::Message)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xfchat::protocol::{Codec, ServerFrame};

    fn frames() -> Vec<ServerFrame> {
        let message: xfchat::db::messages::Message = serde_json::from_value(serde_json::json!({
            "id": 7, "chat_id": 3, "seq": 41, "sender_id": 2,
            "client_msg_id": "6f1c3b5e-8d4a-4f00-9a56-0b8c9e2f1a01",
            "body": "1200:\"quoted\" é", "created_at": "2026-11-26T10:00:00Z"
        }))
        .expect("a message");
        vec![
            ServerFrame::Ack {
                client_msg_id: message.client_msg_id,
                message: message.clone(),
            },
            ServerFrame::Message { message },
            serde_json::from_value(serde_json::json!({
                "type": "error", "code": "overloaded", "message": "busy", "ref": "x"
            }))
            .unwrap(),
            serde_json::from_value(serde_json::json!({
                "type": "error", "code": "bad_frame", "message": "no", "ref": null
            }))
            .unwrap(),
            serde_json::from_value(serde_json::json!({"type": "pong", "nonce": 1})).unwrap(),
        ]
    }

    #[test]
    fn a_glance_reads_what_a_full_decode_reads_in_both_codecs() {
        for codec in [Codec::Json, Codec::MsgPack] {
            let seen = |chat_id, seq| Seen {
                chat_id,
                seq,
                body: "1200:\"quoted\" é".into(),
            };
            let want = [
                Glance::Ack(seen(3, 41)),
                Glance::Message(seen(3, 41)),
                Glance::Error {
                    code: "overloaded".into(),
                    answered: true,
                },
                Glance::Error {
                    code: "bad_frame".into(),
                    answered: false,
                },
                Glance::Other,
            ];
            for (frame, want) in frames().iter().zip(want) {
                let wire = codec.encode(frame);
                assert_eq!(glance(&wire), Some(want), "{codec:?} {frame:?}");
            }
        }
    }

    #[test]
    fn a_frame_without_its_message_is_not_read_as_one() {
        let wire = WsMessage::Text(r#"{"type":"message","message":"x"}"#.into());
        assert_eq!(glance(&wire), None);
    }
}

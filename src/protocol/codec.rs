//! `xfchat.v1.json` (text frames) and `xfchat.v1.msgpack` (binary frames, named fields). A frame
//! fanned out to many sockets is encoded at most once per codec; the bytes are shared.

use std::sync::OnceLock;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

use super::ServerFrame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    MsgPack,
}

impl Codec {
    pub const JSON_PROTOCOL: &'static str = "xfchat.v1.json";
    pub const MSGPACK_PROTOCOL: &'static str = "xfchat.v1.msgpack";

    pub fn protocol(self) -> &'static str {
        match self {
            Codec::Json => Self::JSON_PROTOCOL,
            Codec::MsgPack => Self::MSGPACK_PROTOCOL,
        }
    }

    /// The codec for an offered subprotocol list (comma separated); JSON when none is offered,
    /// `None` when only unknown ones are.
    pub fn negotiate(offered: Option<&str>) -> Option<Codec> {
        let Some(offered) = offered else {
            return Some(Codec::Json);
        };
        offered.split(',').map(str::trim).find_map(|p| match p {
            Self::JSON_PROTOCOL => Some(Codec::Json),
            Self::MSGPACK_PROTOCOL => Some(Codec::MsgPack),
            _ => None,
        })
    }

    /// Encodes any frame in this codec (used by clients and tests as well as the server).
    pub fn encode<T: Serialize>(self, frame: &T) -> WsMessage {
        match self {
            Codec::Json => WsMessage::Text(
                serde_json::to_string(frame)
                    .expect("frames always serialise")
                    .into(),
            ),
            Codec::MsgPack => WsMessage::Binary(msgpack(frame).into()),
        }
    }

    /// Decodes a data frame: text as JSON, binary as MessagePack, whatever was negotiated.
    pub fn decode<T: DeserializeOwned>(message: &WsMessage) -> Result<T, DecodeError> {
        match message {
            WsMessage::Text(text) => {
                // serde_json allows 128 levels; a frame is held to what MessagePack allows:
                // MAX_DEPTH levels counting the innermost value, so one fewer of arrays and
                // objects.
                if json_depth(text) >= MAX_DEPTH {
                    return Err(DecodeError(format!(
                        "nested deeper than {MAX_DEPTH} levels"
                    )));
                }
                serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))
            }
            WsMessage::Binary(bytes) => {
                let mut de = rmp_serde::Deserializer::new(&bytes[..]).with_human_readable();
                // rmp-serde allows 1,024 levels, enough to overflow a thread's stack while
                // decoding one small frame; frames nest three levels at most.
                de.set_max_depth(MAX_DEPTH);
                T::deserialize(&mut de).map_err(|e| DecodeError(e.to_string()))
            }
            _ => Err(DecodeError("not a data frame".into())),
        }
    }
}

/// The deepest nesting a frame may have, in either codec, counting the innermost value.
const MAX_DEPTH: usize = 16;

/// How deep arrays and objects nest in a JSON text (the frame's own object is level 1), read
/// without parsing: brackets inside strings do not count.
fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// MessagePack with field names, and ids and times written as in JSON (strings), so both codecs
/// carry the same values.
fn msgpack<T: Serialize>(frame: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    let mut ser = rmp_serde::Serializer::new(&mut buf)
        .with_struct_map()
        .with_human_readable();
    frame.serialize(&mut ser).expect("frames always serialise");
    buf
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// A server frame and its encodings, made on first use and shared by every recipient.
#[derive(Debug)]
pub struct Encoded {
    pub frame: ServerFrame,
    json: OnceLock<Utf8Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl Encoded {
    pub fn new(frame: ServerFrame) -> Self {
        Self {
            frame,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    pub fn message(&self, codec: Codec) -> WsMessage {
        match codec {
            Codec::Json => WsMessage::Text(self.json().clone()),
            Codec::MsgPack => WsMessage::Binary(self.msgpack().clone()),
        }
    }

    /// The size of the frame in `codec`, encoding it if that has not happened yet.
    pub fn encoded_len(&self, codec: Codec) -> usize {
        match codec {
            Codec::Json => self.json().len(),
            Codec::MsgPack => self.msgpack().len(),
        }
    }

    fn json(&self) -> &Utf8Bytes {
        self.json.get_or_init(|| {
            // A message's frame gets room for its body and envelope at once: growing from
            // serde_json's 128 bytes took two reallocations per frame (1% of the node's CPU at
            // 10,000 msg/s). The rest start small, as a queued frame keeps its buffer.
            let room = match &self.frame {
                ServerFrame::Message { message } | ServerFrame::Ack { message, .. } => {
                    256 + message.body.len()
                }
                _ => 128,
            };
            let mut out = Vec::with_capacity(room);
            serde_json::to_writer(&mut out, &self.frame).expect("frames always serialise");
            String::from_utf8(out)
                .expect("serde_json writes UTF-8")
                .into()
        })
    }

    fn msgpack(&self) -> &Bytes {
        self.msgpack.get_or_init(|| msgpack(&self.frame).into())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::protocol::ClientFrame;

    fn ping_nested(levels: usize) -> Value {
        let mut nonce = json!("x]}\\\"[{");
        for _ in 0..levels {
            nonce = json!([nonce]);
        }
        json!({ "type": "ping", "nonce": nonce })
    }

    #[test]
    fn json_and_msgpack_refuse_the_same_nesting() {
        let mut accepted = Vec::new();
        for levels in 0..40 {
            let frame = ping_nested(levels);
            let text = WsMessage::Text(frame.to_string().into());
            let binary = WsMessage::Binary(rmp_serde::to_vec_named(&frame).unwrap().into());
            let as_json = Codec::decode::<ClientFrame>(&text).is_ok();
            let as_msgpack = Codec::decode::<ClientFrame>(&binary).is_ok();
            assert_eq!(as_json, as_msgpack, "{levels} levels: json {as_json}");
            if as_json {
                accepted.push(levels);
            }
        }
        assert!(
            accepted.contains(&3) && !accepted.contains(&39),
            "{accepted:?}"
        );
    }
}

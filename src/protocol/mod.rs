//! The WebSocket protocol: the frames both sides exchange, and the two codecs that carry them.
//! Written once and shared by the hub, the tests and the load harness.

mod codec;
mod error_code;
pub mod wire;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use codec::{Codec, DecodeError, Encoded};
pub use error_code::ErrorCode;

use crate::ids::{ChatId, UserId};
pub use wire::{Chat, FriendRequest, Message};

/// A frame a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Send {
        chat_id: ChatId,
        client_msg_id: Uuid,
        body: String,
    },
    Sync {
        chat_id: ChatId,
        after_seq: i64,
        limit: Option<i64>,
    },
    /// A sync for many chats at once: the last seq the client has of each.
    Resume {
        #[serde(deserialize_with = "positions")]
        positions: BTreeMap<ChatId, i64>,
    },
    Read {
        chat_id: ChatId,
        seq: i64,
    },
    Typing {
        chat_id: ChatId,
    },
    Ping {
        nonce: Value,
    },
}

/// Reads `resume` positions whose chat ids are map keys: strings in JSON (`{"12": 40}`),
/// integers or strings in MessagePack.
fn positions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<ChatId, i64>, D::Error> {
    #[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
    #[serde(untagged)]
    enum Key {
        Number(i64),
        Text(String),
    }
    let raw = BTreeMap::<Key, i64>::deserialize(d)?;
    raw.into_iter()
        .map(|(key, seq)| {
            let id = match key {
                Key::Number(n) => n,
                Key::Text(t) => t.parse().map_err(|_| {
                    serde::de::Error::custom(format!("chat id {t:?} is not a number"))
                })?,
            };
            Ok((ChatId(id), seq))
        })
        .collect()
}

impl ClientFrame {
    /// The frame's `type`, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Send { .. } => "send",
            Self::Sync { .. } => "sync",
            Self::Resume { .. } => "resume",
            Self::Read { .. } => "read",
            Self::Typing { .. } => "typing",
            Self::Ping { .. } => "ping",
        }
    }
}

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// To the sending connection, once the message is committed.
    Ack {
        client_msg_id: Uuid,
        message: Message,
    },
    /// To every other connection of every member.
    Message {
        message: Message,
    },
    /// After a sync has sent every stored message with seq > after_seq.
    Synced {
        chat_id: ChatId,
        last_seq: i64,
    },
    Read {
        chat_id: ChatId,
        user_id: UserId,
        seq: i64,
    },
    Typing {
        chat_id: ChatId,
        user_id: UserId,
    },
    FriendRequest {
        request: FriendRequest,
    },
    Chat {
        chat: Chat,
    },
    /// The receiver left the chat or was removed from it: nothing more of it will come.
    ChatRemoved {
        chat_id: ChatId,
    },
    Pong {
        nonce: Value,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref")]
        reference: Option<Uuid>,
    },
}

impl ServerFrame {
    /// The frame's `type`, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ack { .. } => "ack",
            Self::Message { .. } => "message",
            Self::Synced { .. } => "synced",
            Self::Read { .. } => "read",
            Self::Typing { .. } => "typing",
            Self::FriendRequest { .. } => "friend_request",
            Self::Chat { .. } => "chat",
            Self::ChatRemoved { .. } => "chat_removed",
            Self::Pong { .. } => "pong",
            Self::Error { .. } => "error",
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<Uuid>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            reference,
        }
    }
}

/// Close codes the server uses, one per reason, so that clients can act on them. The reason
/// text beside each code is for people.
pub mod close {
    /// The server is shutting down; reconnect (to another instance) and `resume`.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (reserved bits or opcodes, bad continuation).
    pub const PROTOCOL: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server hit a bug while serving this socket; reconnect and `resume`.
    pub const INTERNAL: u16 = 1011;
    /// The token the socket authenticated with expired; reconnect with a fresh one.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The token the socket authenticated with was revoked (logout).
    pub const TOKEN_REVOKED: u16 = 4002;
    /// The client did not answer the server's pings.
    pub const HEARTBEAT: u16 = 4003;
    /// The client read nothing for the stall timeout.
    pub const STALLED: u16 = 4004;
}

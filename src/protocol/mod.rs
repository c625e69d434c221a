//! The WebSocket protocol: the frames both sides exchange, and the two codecs that carry them.
//! Written once and shared by the hub, the tests and the load harness.

mod codec;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use codec::{Codec, DecodeError, Encoded};

use crate::db::chats::Chat;
use crate::db::friends::FriendRequest;
use crate::db::messages::Message;
use crate::ids::{ChatId, UserId};

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

impl ClientFrame {
    /// The frame's `type`, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Send { .. } => "send",
            Self::Sync { .. } => "sync",
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
        code: String,
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

    pub fn error(code: &str, message: impl Into<String>, reference: Option<Uuid>) -> Self {
        Self::Error {
            code: code.to_owned(),
            message: message.into(),
            reference,
        }
    }
}

/// Close codes and reasons the server uses.
pub mod close {
    /// The server is shutting down; reconnect and `sync`.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke a rule: did not answer pings, or did not read its frames.
    pub const POLICY: u16 = 1008;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server hit a bug while serving this socket; reconnect and `sync`.
    pub const INTERNAL: u16 = 1011;
    /// The token the socket authenticated with expired; reconnect with a fresh one.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The token the socket authenticated with was revoked (logout).
    pub const TOKEN_REVOKED: u16 = 4002;
    pub const SLOW_CONSUMER: &str = "slow consumer";
    pub const HEARTBEAT: &str = "heartbeat timeout";
}

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
pub use wire::{Chat, EntryKind, FriendRequest, Member, Message, Reaction};

/// A frame a client sends. Unknown fields are refused (`bad_frame`), as over HTTP, so a
/// misspelt field is an error instead of a silent default.
///
/// Every frame but `send` may carry a client-chosen `ref`, echoed in its answer (`synced`,
/// `pong`) and in any `error` about it; a send's reference is its `client_msg_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Send {
        chat_id: ChatId,
        client_msg_id: Uuid,
        body: String,
        /// The seq of the earlier message of the chat this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<i64>,
        /// Attachments uploaded to the chat (`POST /api/chats/{id}/attachments`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<Uuid>,
    },
    Sync {
        chat_id: ChatId,
        after_seq: i64,
        limit: Option<i64>,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    /// A sync for many chats at once: the last seq the client has of each.
    Resume {
        #[serde(deserialize_with = "positions")]
        positions: BTreeMap<ChatId, i64>,
        /// The epoch the positions belong to (from `hello`); positions of an older one are set
        /// back to what both histories share.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<Uuid>,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    Read {
        chat_id: ChatId,
        seq: i64,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    Typing {
        chat_id: ChatId,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    Ping {
        nonce: Value,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    /// Edits one of my messages, as `PATCH /api/chats/{id}/messages/{seq}` does.
    Edit {
        chat_id: ChatId,
        seq: i64,
        body: String,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    /// Deletes a message for everyone, as `DELETE /api/chats/{id}/messages/{seq}` does.
    Delete {
        chat_id: ChatId,
        seq: i64,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    /// Reacts to a message with one emoji.
    React {
        chat_id: ChatId,
        seq: i64,
        emoji: String,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    /// Takes a reaction back.
    Unreact {
        chat_id: ChatId,
        seq: i64,
        emoji: String,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
}

/// A client's name for one of its frames, echoed in the answer: a string of at most
/// [`Ref::MAX_BYTES`] bytes or an integer. For a send it is the `client_msg_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ref {
    Number(i64),
    Text(String),
}

impl Ref {
    pub const MAX_BYTES: usize = 64;

    /// The send this reference names, when it is a `client_msg_id`.
    pub fn send_id(&self) -> Option<Uuid> {
        match self {
            Self::Text(text) => text.parse().ok(),
            Self::Number(_) => None,
        }
    }

    pub fn is_too_long(&self) -> bool {
        matches!(self, Self::Text(text) if text.len() > Self::MAX_BYTES)
    }
}

impl From<Uuid> for Ref {
    fn from(id: Uuid) -> Self {
        Self::Text(id.to_string())
    }
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
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
            Self::React { .. } => "react",
            Self::Unreact { .. } => "unreact",
        }
    }

    /// The `ref` the client gave this frame. A send has none: its `client_msg_id` names it.
    pub fn reference(&self) -> Option<&Ref> {
        match self {
            Self::Send { .. } => None,
            Self::Sync { reference, .. }
            | Self::Resume { reference, .. }
            | Self::Read { reference, .. }
            | Self::Typing { reference, .. }
            | Self::Ping { reference, .. }
            | Self::Edit { reference, .. }
            | Self::Delete { reference, .. }
            | Self::React { reference, .. }
            | Self::Unreact { reference, .. } => reference.as_ref(),
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
    /// After a sync has sent every stored message with seq > after_seq, up to `last_seq`;
    /// `more` when a `limit` stopped it before the chat's end.
    /// The first frame on every socket: the epoch of the history that seqs belong to.
    Hello {
        epoch: Uuid,
    },
    /// The chat's history holds nothing past `seq` that the position the client stated can be
    /// trusted for (a restore, a promotion, or a position beyond the chat's end): drop what you
    /// hold of it past `seq`; the stream goes on from there.
    Rewound {
        chat_id: ChatId,
        seq: i64,
        epoch: Uuid,
    },
    Synced {
        chat_id: ChatId,
        last_seq: i64,
        more: bool,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
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
    /// Who joined and who left a chat the receiver was already in: the change, not the whole
    /// member list, so that a change to a large group costs what it changes.
    Members {
        chat_id: ChatId,
        added: Vec<Member>,
        removed: Vec<UserId>,
    },
    /// The receiver left the chat or was removed from it: nothing more of it will come.
    ChatRemoved {
        chat_id: ChatId,
    },
    /// A friend came online (a first socket anywhere) or went offline (the last one closed),
    /// or hid or showed their presence (hidden reads as offline, without `last_seen_at`).
    Presence {
        user_id: UserId,
        online: bool,
        last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    Pong {
        nonce: Value,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    /// `ref` names the frame it answers (null when it could not be read); `chat_id` the chat
    /// it is about when the frame named several (a `resume`); `retry_after_ms` when to try
    /// again after `rate_limited`.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref")]
        reference: Option<Ref>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chat_id: Option<ChatId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerFrame {
    /// The frame's `type`, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ack { .. } => "ack",
            Self::Message { .. } => "message",
            Self::Synced { .. } => "synced",
            Self::Hello { .. } => "hello",
            Self::Rewound { .. } => "rewound",
            Self::Read { .. } => "read",
            Self::Typing { .. } => "typing",
            Self::FriendRequest { .. } => "friend_request",
            Self::Chat { .. } => "chat",
            Self::Members { .. } => "members",
            Self::ChatRemoved { .. } => "chat_removed",
            Self::Pong { .. } => "pong",
            Self::Error { .. } => "error",
            Self::Presence { .. } => "presence",
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<Ref>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            reference,
            chat_id: None,
            retry_after_ms: None,
        }
    }

    /// The same error, about one chat of the frame it answers.
    pub fn about_chat(mut self, chat: ChatId) -> Self {
        if let Self::Error { chat_id, .. } = &mut self {
            *chat_id = Some(chat);
        }
        self
    }

    /// The same error, saying when to try again.
    pub fn retry_after(mut self, wait: Option<std::time::Duration>) -> Self {
        if let Self::Error { retry_after_ms, .. } = &mut self {
            *retry_after_ms = wait.map(|w| (w.as_millis() as u64).max(1));
        }
        self
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
    /// The history was rewound (a restore, a promotion): reconnect and `resume` with the epoch
    /// your positions belong to.
    pub const HISTORY_REWOUND: u16 = 4005;
}

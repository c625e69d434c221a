//! The objects frames (and the HTTP API) carry. They are the protocol's own, built on ids and
//! serde only: the database maps its rows into them, so the wire format changes when these
//! change, on purpose, never because a table did.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{ChatId, MessageId, RequestId, UserId};

/// A stored entry of a chat's log: a message, or an edit, delete or reaction acting on the
/// message `target`. Every entry has its own seq, so streams replay them in order. Its
/// `Default` is the empty message, for `..Default::default()` where an entry is new.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub chat_id: ChatId,
    pub seq: i64,
    pub sender_id: UserId,
    pub client_msg_id: Uuid,
    /// A message's text (empty once deleted); an edit's new text; a reaction's emoji.
    pub body: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub kind: EntryKind,
    /// The seq of the message an edit, delete or reaction acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<i64>,
    /// The seq of the earlier message of the same chat this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<i64>,
    /// When a message was last edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    /// A message deleted for everyone (or an edit of one): its text is gone from the server.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The ids of the attachments a message carries (`GET /api/attachments/{id}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Uuid>,
    /// A message's reactions, in the order they first appeared: only in history, where they
    /// are read for the reader (`me`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
}

/// What an entry of the log is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    #[default]
    Message,
    Edit,
    Delete,
    React,
    Unreact,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Edit => "edit",
            Self::Delete => "delete",
            Self::React => "react",
            Self::Unreact => "unreact",
        }
    }

    /// The kind the database stores as `kind`; unknown ones read as messages.
    pub fn parse(s: &str) -> Self {
        [Self::Edit, Self::Delete, Self::React, Self::Unreact]
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or(Self::Message)
    }
}

/// One emoji on a message: how many reacted with it, and whether the reader did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: i64,
    pub me: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    Direct,
    Group,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub last_read_seq: i64,
}

/// A chat as one member sees it: `last_read_seq` and `unread` are that member's. `unread`
/// counts others' messages after `last_read_seq` (never edits, deletes or reactions), at most
/// [`Chat::UNREAD_MAX`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub id: ChatId,
    pub kind: ChatKind,
    pub title: Option<String>,
    /// Who made it: a group's creator may add and remove members and delete any message.
    pub created_by: UserId,
    pub members: Vec<Member>,
    pub last_seq: i64,
    pub last_read_seq: i64,
    pub unread: i64,
    pub created_at: DateTime<Utc>,
    /// The newest message (not edit or reaction) in its current state, for a preview.
    pub last_message: Option<Message>,
    /// When the newest message was sent, or the chat created: chat lists sort on it.
    pub last_activity_at: DateTime<Utc>,
}

impl Chat {
    /// The most unread messages counted.
    pub const UNREAD_MAX: i64 = 9999;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Accepted,
    Declined,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendRequest {
    pub id: RequestId,
    pub from_user_id: UserId,
    pub from_username: String,
    pub to_user_id: UserId,
    pub to_username: String,
    pub status: RequestStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

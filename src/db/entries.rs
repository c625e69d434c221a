//! Edits, deletes and reactions: entries of a chat's log that act on one of its messages
//! (migration `entries_edit_delete_react`). Each takes the chat's next seq in the transaction
//! that changes the message's state, in one call of `xfchat_amend`, and is then delivered like
//! a message, so sockets, `sync` and `resume` see it in order with everything else.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::ids::{ChatId, MessageId, UserId};
use crate::protocol::{EntryKind, ErrorCode, Message, Reaction};

/// Most distinct reactions one message may carry.
pub const MAX_REACTIONS: i32 = 20;
/// Longest reaction, in bytes: one emoji, even a sequence of several joined ones.
const EMOJI_MAX_BYTES: usize = 64;

/// One edit, delete, reaction or its withdrawal, by `actor` on message `target` of `chat`.
pub struct Amend {
    pub chat: ChatId,
    pub actor: UserId,
    pub kind: EntryKind,
    pub target: i64,
    /// The new text of an edit; the emoji of a reaction; empty for a delete.
    pub body: String,
}

/// What an amend did.
pub enum Amended {
    /// Stored as the entry, to be delivered to the chat's members.
    New(Box<Message>, Vec<UserId>),
    /// Nothing to do (the same text, a reaction already there or already gone, a message
    /// already deleted): no entry.
    Unchanged,
}

#[derive(sqlx::FromRow)]
struct AmendRow {
    outcome: String,
    id: Option<MessageId>,
    seq: Option<i64>,
    client_msg_id: Option<Uuid>,
    body: Option<String>,
    created_at: Option<DateTime<Utc>>,
    member_id: Option<UserId>,
}

/// Stores `amend` and answers its entry with the chat's members.
pub async fn amend(conn: &mut PgConnection, amend: Amend) -> AppResult<Amended> {
    let rows: Vec<AmendRow> = sqlx::query_as(
        "SELECT outcome, id, seq, client_msg_id, body, created_at, member_id \
         FROM xfchat_amend($1, $2, $3, $4, $5, $6)",
    )
    .bind(amend.chat)
    .bind(amend.actor)
    .bind(amend.kind.as_str())
    .bind(amend.target)
    .bind(&amend.body)
    .bind(MAX_REACTIONS)
    .fetch_all(conn)
    .await?;
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Err(AppError::Internal(anyhow::anyhow!(
            "xfchat_amend answered nothing"
        )));
    };
    match first.outcome.as_str() {
        "new" => {}
        "unchanged" => return Ok(Amended::Unchanged),
        "not_found" => return Err(AppError::NotFound),
        "forbidden" => {
            return Err(AppError::Forbidden(match amend.kind {
                EntryKind::Delete => {
                    "only the sender, or the group's creator, may delete a message".into()
                }
                _ => "only the sender may edit a message".into(),
            }))
        }
        "blocked" => {
            return Err(AppError::Forbidden(
                "this direct chat is closed: you are not friends, or one of you blocked the other"
                    .into(),
            ))
        }
        "too_many" => {
            return Err(AppError::conflict(
                ErrorCode::TooManyReactions,
                format!("a message carries at most {MAX_REACTIONS} different reactions"),
            ))
        }
        other => {
            return Err(AppError::Internal(anyhow::anyhow!(
                "xfchat_amend answered {other:?}"
            )))
        }
    }
    let missing = || AppError::Internal(anyhow::anyhow!("xfchat_amend left out the entry"));
    let entry = Message {
        id: first.id.ok_or_else(missing)?,
        chat_id: amend.chat,
        seq: first.seq.ok_or_else(missing)?,
        sender_id: amend.actor,
        client_msg_id: first.client_msg_id.ok_or_else(missing)?,
        body: first.body.ok_or_else(missing)?,
        created_at: first.created_at.ok_or_else(missing)?,
        kind: amend.kind,
        target: Some(amend.target),
        ..Default::default()
    };
    let members = rows.filter_map(|r| r.member_id).collect();
    Ok(Amended::New(Box::new(entry), members))
}

/// A reaction is one emoji (or a sequence of joined ones): no spaces or controls.
pub fn check_emoji(emoji: &str) -> AppResult<()> {
    if emoji.is_empty()
        || emoji.len() > EMOJI_MAX_BYTES
        || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(AppError::invalid(format!(
            "emoji: one emoji, at most {EMOJI_MAX_BYTES} bytes, without spaces"
        )));
    }
    Ok(())
}

/// Fills in the reactions of the messages of `page` (one chat's) as `reader` sees them: one
/// query for the page.
pub async fn with_reactions(
    conn: &mut PgConnection,
    reader: UserId,
    page: &mut [Message],
) -> AppResult<()> {
    let Some(chat) = page.first().map(|m| m.chat_id) else {
        return Ok(());
    };
    let seqs: Vec<i64> = page
        .iter()
        .filter(|m| m.kind == EntryKind::Message && !m.deleted)
        .map(|m| m.seq)
        .collect();
    if seqs.is_empty() {
        return Ok(());
    }
    let rows: Vec<(i64, String, i64, bool)> = sqlx::query_as(
        "SELECT seq, emoji, count(*), bool_or(user_id = $2) FROM reactions \
         WHERE conversation_id = $1 AND seq = ANY($3) \
         GROUP BY seq, emoji ORDER BY seq, min(created_at), emoji",
    )
    .bind(chat)
    .bind(reader)
    .bind(&seqs)
    .fetch_all(conn)
    .await?;
    for (seq, emoji, count, me) in rows {
        if let Some(m) = page.iter_mut().find(|m| m.seq == seq) {
            m.reactions.push(Reaction { emoji, count, me });
        }
    }
    Ok(())
}

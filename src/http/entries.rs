//! Edits, deletes and reactions over HTTP: each stores an entry of the chat's log (see
//! `db::entries`) and delivers it like a message. Answered with the entry, or `null` when
//! nothing changed.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AuthUser;
use super::extract::Path;
use super::{AppState, Json};
use crate::db::entries::Amend;
use crate::error::AppResult;
use crate::ids::{ChatId, UserId};
use crate::protocol::EntryKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    body: String,
}

/// `PATCH /api/chats/{id}/messages/{seq}`: the sender changes the text.
pub async fn edit(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((chat, seq)): Path<(ChatId, i64)>,
    Json(req): Json<EditBody>,
) -> AppResult<axum::Json<Value>> {
    amend(&state, me, chat, seq, EntryKind::Edit, req.body).await
}

/// `DELETE /api/chats/{id}/messages/{seq}`: deleted for everyone, its text gone from the
/// database; by the sender or a group's creator.
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((chat, seq)): Path<(ChatId, i64)>,
) -> AppResult<axum::Json<Value>> {
    amend(&state, me, chat, seq, EntryKind::Delete, String::new()).await
}

/// `PUT /api/chats/{id}/messages/{seq}/reactions/{emoji}`.
pub async fn react(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((chat, seq, emoji)): Path<(ChatId, i64, String)>,
) -> AppResult<axum::Json<Value>> {
    amend(&state, me, chat, seq, EntryKind::React, emoji).await
}

/// `DELETE /api/chats/{id}/messages/{seq}/reactions/{emoji}`.
pub async fn unreact(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((chat, seq, emoji)): Path<(ChatId, i64, String)>,
) -> AppResult<axum::Json<Value>> {
    amend(&state, me, chat, seq, EntryKind::Unreact, emoji).await
}

async fn amend(
    state: &AppState,
    actor: UserId,
    chat: ChatId,
    target: i64,
    kind: EntryKind,
    body: String,
) -> AppResult<axum::Json<Value>> {
    state.throttles.user_action(actor)?;
    let amend = Amend {
        chat,
        actor,
        kind,
        target,
        body,
    };
    let entry = state.hub.amend(amend).await?;
    Ok(axum::Json(json!({ "entry": entry })))
}

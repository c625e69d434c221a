//! Who is in a group chat: adding friends, leaving, and removal by the chat's creator. Every
//! remaining member hears a `chat` event with the new member list; whoever left or was removed
//! hears `chat_removed` and from then on gets nothing of the chat, its history included.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Acquire;

use super::auth::AuthUser;
use super::chats::announce_change;
use super::extract::Path;
use super::{AppState, Json};
use crate::db::{chats, members, Op};
use crate::error::{AppError, AppResult};
use crate::ids::{ChatId, UserId};
use crate::protocol::ServerFrame;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMembers {
    user_ids: Vec<UserId>,
}

pub async fn add(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<ChatId>,
    Json(req): Json<NewMembers>,
) -> AppResult<axum::Json<Value>> {
    if req.user_ids.is_empty() || req.user_ids.len() > 1000 {
        return Err(AppError::invalid("user_ids: 1 to 1000 users"));
    }
    state.throttles.social(me)?;
    let mut conn = state.db.conn(Op::Chats).await?;
    let mut tx = conn.begin().await?;
    let max = state.config.group_max_members;
    let added = members::add(&mut tx, id, me, &req.user_ids, max).await?;
    tx.commit().await?;
    conn.commit().await?;
    if !added.is_empty() {
        announce_change(&state, &mut conn, id, &added, &[]).await;
    }
    let chat = chats::get(&mut conn, me, id).await?;
    Ok(axum::Json(json!({ "chat": chat })))
}

pub async fn leave(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<ChatId>,
) -> AppResult<StatusCode> {
    gone(&state, id, me, None).await
}

pub async fn remove(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((id, user)): Path<(ChatId, UserId)>,
) -> AppResult<StatusCode> {
    state.throttles.social(me)?;
    gone(&state, id, user, Some(me)).await
}

/// Takes `user` out of `chat` (by the creator `by`, or by themselves), then tells everyone.
async fn gone(
    state: &AppState,
    chat: ChatId,
    user: UserId,
    by: Option<UserId>,
) -> AppResult<StatusCode> {
    let mut conn = state.db.conn(Op::Chats).await?;
    let mut tx = conn.begin().await?;
    match by {
        Some(by) if by != user => members::remove(&mut tx, chat, by, user).await?,
        _ => members::leave(&mut tx, chat, user).await?,
    }
    tx.commit().await?;
    conn.done().await?;
    announce_departure(state, chat, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Tells `user` they are out of `chat`, and its remaining members who is left.
pub async fn announce_departure(state: &AppState, chat: ChatId, user: UserId) -> AppResult<()> {
    state
        .hub
        .notify(&[user], None, ServerFrame::ChatRemoved { chat_id: chat });
    let mut conn = state.db.conn(Op::Chats).await?;
    announce_change(state, &mut conn, chat, &[], &[user]).await;
    Ok(())
}

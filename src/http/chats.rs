//! Chats, their history, sending by HTTP and read markers.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Acquire;
use sqlx::PgConnection;
use uuid::Uuid;

use super::auth::AuthUser;
use super::extract::{Path, Query};
use super::{AppState, Json};
use crate::db::messages::{self, NewMessage};
use crate::db::Op;
use crate::db::{chats, entries, replica};
use crate::error::{AppError, AppResult};
use crate::hub::persist::Persisted;
use crate::ids::{ChatId, UserId};
use crate::protocol::ServerFrame;

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    title: String,
    member_ids: Vec<UserId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    body: String,
    reply_to: Option<i64>,
    #[serde(default)]
    attachments: Vec<Uuid>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadBody {
    seq: i64,
}

pub async fn list(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> AppResult<axum::Json<Value>> {
    let mut conn = state.db.conn(Op::Chats).await?;
    let chats = chats::list(&mut conn, me).await?;
    Ok(axum::Json(json!({ "chats": chats })))
}

pub async fn get(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<ChatId>,
) -> AppResult<axum::Json<Value>> {
    let mut conn = state.db.conn(Op::Chats).await?;
    let chat = chats::get(&mut conn, me, id).await?;
    Ok(axum::Json(json!({ "chat": chat })))
}

pub async fn direct(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(other): Path<UserId>,
) -> AppResult<(StatusCode, axum::Json<Value>)> {
    let mut conn = state.db.conn(Op::Chats).await?;
    let mut tx = conn.begin().await?;
    let (chat, created) = chats::get_or_create_direct(&mut tx, me, other).await?;
    tx.commit().await?;
    conn.commit().await?;
    if created {
        announce_new(&state, &mut conn, &chat).await;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(json!({ "chat": chat }))))
}

pub async fn create_group(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Json(req): Json<NewGroup>,
) -> AppResult<(StatusCode, axum::Json<Value>)> {
    state.throttles.social(me)?;
    let title = crate::validate::group_title(&req.title)?;
    if req.member_ids.len() > 1000 {
        return Err(AppError::invalid("member_ids: at most 1000 members"));
    }
    let mut conn = state.db.conn(Op::Chats).await?;
    let mut tx = conn.begin().await?;
    let max = state.config.group_max_members;
    let chat = chats::create_group(&mut tx, me, title, &req.member_ids, max).await?;
    tx.commit().await?;
    conn.commit().await?;
    announce_new(&state, &mut conn, &chat).await;
    Ok((StatusCode::CREATED, axum::Json(json!({ "chat": chat }))))
}

pub async fn history(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<ChatId>,
    Query(q): Query<HistoryQuery>,
) -> AppResult<axum::Json<Value>> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit < 1 {
        return Err(AppError::invalid("limit: must be at least 1"));
    }
    let mut conn = state.db.conn(Op::History).await?;
    if state.db.has_replica() {
        let last_seq = messages::member_last_seq(&mut conn, me, id)
            .await?
            .ok_or(AppError::NotFound)?;
        drop(conn);
        let (after, upto) = history_range(&q, limit.min(MAX_PAGE), last_seq);
        let mut page = replica::range(&state.db, Op::History, id, after, upto).await?;
        let mut conn = state.db.conn(Op::History).await?;
        entries::with_reactions(&mut conn, me, &mut page).await?;
        return Ok(axum::Json(json!({ "messages": page })));
    }
    chats::ensure_member(&mut conn, id, me).await?;
    let mut page = messages::page(
        &mut conn,
        id,
        q.after_seq,
        q.before_seq,
        limit.min(MAX_PAGE),
    )
    .await?;
    entries::with_reactions(&mut conn, me, &mut page).await?;
    Ok(axum::Json(json!({ "messages": page })))
}

/// The seqs a history page holds, as `(after, upto]`, in a chat whose last seq is `last_seq`:
/// seqs are gapless, so the page is known before it is read. Newest first when only
/// `before_seq` is given, as [`messages::page`] reads it.
fn history_range(q: &HistoryQuery, limit: i64, last_seq: i64) -> (i64, i64) {
    let after = q.after_seq.unwrap_or(0).max(0);
    let upto = q
        .before_seq
        .map_or(last_seq, |before| before.saturating_sub(1).min(last_seq));
    if upto <= after {
        return (after, after);
    }
    if q.before_seq.is_some() && q.after_seq.is_none() {
        (upto.saturating_sub(limit).max(after), upto)
    } else {
        (after, upto.min(after.saturating_add(limit)))
    }
}

pub async fn send(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((id, client_msg_id)): Path<(ChatId, Uuid)>,
    Json(req): Json<SendBody>,
) -> AppResult<(StatusCode, axum::Json<Value>)> {
    state.throttles.user_action(me)?;
    messages::check_send(&req.body, &req.attachments, state.config.message_max_bytes)?;
    messages::check_reply(req.reply_to)?;
    let sent = NewMessage {
        chat: id,
        sender: me,
        client_msg_id,
        body: req.body,
        reply_to: req.reply_to,
        attachments: req.attachments.into_boxed_slice(),
    };
    let (status, message) = match state.hub.send(sent).await? {
        Persisted::New(m) => (StatusCode::CREATED, m),
        Persisted::Replay(m) => (StatusCode::OK, m),
    };
    Ok((status, axum::Json(json!({ "message": message }))))
}

pub async fn read(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<ChatId>,
    Json(req): Json<ReadBody>,
) -> AppResult<StatusCode> {
    state.throttles.user_action(me)?;
    let mut conn = state.db.conn(Op::Chats).await?;
    if !chats::mark_read(&mut conn, id, me, req.seq).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    conn.commit().await?;
    let members = chats::audience(&mut conn, id, me).await?;
    state.hub.notify(
        &members,
        None,
        ServerFrame::Read {
            chat_id: id,
            user_id: me,
            seq: req.seq,
        },
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Tells every member of a new chat about it: nothing is read in it yet, so they all see it
/// alike and get one frame, read and serialised once. Best effort: the chat is committed, and a
/// member who misses this finds it in `GET /api/chats`.
pub(super) async fn announce_new(state: &AppState, conn: &mut PgConnection, chat: &chats::Chat) {
    match chats::for_newcomers(conn, chat.id).await {
        Ok(view) => {
            let members: Vec<UserId> = view.members.iter().map(|m| m.id).collect();
            state
                .hub
                .notify(&members, None, ServerFrame::Chat { chat: view });
        }
        Err(e) => tracing::warn!(error = %e, "could not announce a new chat"),
    }
}

/// Tells of a change to a group's members with one read of the chat: the newcomers get the
/// chat, the members already in it a `members` frame with only the change. Best effort, as
/// above.
pub(super) async fn announce_change(
    state: &AppState,
    conn: &mut PgConnection,
    chat: ChatId,
    added: &[UserId],
    removed: &[UserId],
) {
    let view = match chats::for_newcomers(conn, chat).await {
        Ok(view) => view,
        // No one is left to tell.
        Err(AppError::NotFound) => return,
        Err(e) => return tracing::warn!(error = %e, "could not announce a membership change"),
    };
    let added_set: HashSet<UserId> = added.iter().copied().collect();
    let (newcomers, others): (Vec<&chats::Member>, Vec<&chats::Member>) =
        view.members.iter().partition(|m| added_set.contains(&m.id));
    let frame = ServerFrame::Members {
        chat_id: chat,
        added: newcomers.into_iter().cloned().collect(),
        removed: removed.to_vec(),
    };
    let others: Vec<UserId> = others.into_iter().map(|m| m.id).collect();
    state.hub.notify(&others, None, frame);
    if !added.is_empty() {
        state
            .hub
            .notify(added, None, ServerFrame::Chat { chat: view });
    }
}

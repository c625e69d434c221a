//! Friend requests and the friend list.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Acquire;

use super::auth::AuthUser;
use super::extract::Path;
use super::{AppState, Json};
use crate::db::friends::{self, Response};
use crate::db::Op;
use crate::db::{blocks, users};
use crate::error::{AppError, AppResult};
use crate::ids::{RequestId, UserId};
use crate::protocol::ServerFrame;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    username: String,
}

pub async fn send(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Json(req): Json<SendRequest>,
) -> AppResult<(StatusCode, axum::Json<Value>)> {
    crate::validate::text("username", &req.username)?;
    state.throttles.social(me)?;
    let mut conn = state.db.conn(Op::Friends).await?;
    let to = users::by_username(&mut conn, &req.username)
        .await?
        .ok_or_else(|| AppError::invalid("username: no such user"))?;
    let request =
        friends::send_request(&mut conn, me, to.id, state.config.declined_cooldown).await?;
    conn.done().await?;
    let frame = ServerFrame::FriendRequest {
        request: request.clone(),
    };
    state.hub.notify(&[to.id], None, frame);
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "request": request })),
    ))
}

pub async fn pending(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> AppResult<axum::Json<Value>> {
    let mut conn = state.db.conn(Op::Friends).await?;
    let (incoming, outgoing) = friends::pending(&mut conn, me).await?;
    Ok(axum::Json(
        json!({ "incoming": incoming, "outgoing": outgoing }),
    ))
}

async fn respond(
    state: AppState,
    me: UserId,
    id: RequestId,
    response: Response,
) -> AppResult<axum::Json<Value>> {
    let mut conn = state.db.conn(Op::Friends).await?;
    let mut tx = conn.begin().await?;
    let request = friends::respond(&mut tx, me, id, response).await?;
    tx.commit().await?;
    conn.done().await?;
    // Both sides learn the request's new state.
    let frame = ServerFrame::FriendRequest {
        request: request.clone(),
    };
    state
        .hub
        .notify(&[request.from_user_id, request.to_user_id], None, frame);
    Ok(axum::Json(json!({ "request": request })))
}

pub async fn accept(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<RequestId>,
) -> AppResult<axum::Json<Value>> {
    respond(state, me, id, Response::Accept).await
}

pub async fn decline(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<RequestId>,
) -> AppResult<axum::Json<Value>> {
    respond(state, me, id, Response::Decline).await
}

pub async fn cancel(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<RequestId>,
) -> AppResult<axum::Json<Value>> {
    respond(state, me, id, Response::Cancel).await
}

pub async fn list(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> AppResult<axum::Json<Value>> {
    let mut conn = state.db.conn(Op::Friends).await?;
    let friends = friends::list(&mut conn, me).await?;
    Ok(axum::Json(json!({ "friends": friends })))
}

/// Blocks a user: ends the friendship and pending requests, and keeps them from befriending
/// you, starting a direct chat or sending in the one you share.
pub async fn block(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(other): Path<UserId>,
) -> AppResult<StatusCode> {
    let mut conn = state.db.conn(Op::Friends).await?;
    let mut tx = conn.begin().await?;
    blocks::block(&mut tx, me, other).await?;
    tx.commit().await?;
    conn.done().await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unblock(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(other): Path<UserId>,
) -> AppResult<StatusCode> {
    let mut conn = state.db.conn(Op::Friends).await?;
    blocks::unblock(&mut conn, me, other).await?;
    conn.done().await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(other): Path<UserId>,
) -> AppResult<StatusCode> {
    let mut conn = state.db.conn(Op::Friends).await?;
    friends::remove(&mut conn, me, other).await?;
    conn.done().await?;
    Ok(StatusCode::NO_CONTENT)
}

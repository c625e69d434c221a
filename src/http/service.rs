//! The service API, for the app's backend: `Authorization: Bearer <XFCHAT_SERVICE_KEY>` on
//! every route under `/api/service/`. It posts messages from the system, makes group chats for
//! given users and changes their members, maps the app's user ids to XFChat users, and revokes
//! a user's tokens. The key is compared in constant time and never logged.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Acquire;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::auth::bearer_token;
use super::chats::{announce_change, announce_new};
use super::extract::Path;
use super::members::announce_departure;
use super::{AppState, Json};
use crate::auth::external_session;
use crate::db::{chats, members, service, users, Op};
use crate::error::{AppError, AppResult};
use crate::hub::Persisted;
use crate::ids::{ChatId, UserId};

/// A caller that showed the service key.
pub struct Service;

impl FromRequestParts<AppState> for Service {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Some(key) = &state.config.integrations.service_key else {
            return Err(AppError::Unauthorized(
                "the service API is off: no XFCHAT_SERVICE_KEY",
            ));
        };
        let given = bearer_token(parts).ok_or(AppError::Unauthorized("missing service key"))?;
        if bool::from(given.as_bytes().ct_eq(key.expose().as_bytes())) {
            Ok(Service)
        } else {
            Err(AppError::Unauthorized("invalid service key"))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemMessage {
    body: String,
    /// Makes a retry safe: the same id answers the message stored the first time.
    client_msg_id: Option<Uuid>,
}

/// `POST /api/service/chats/{id}/messages`: a message from the system, delivered to the
/// members like any message.
pub async fn post_message(
    State(state): State<AppState>,
    _: Service,
    Path(chat): Path<ChatId>,
    Json(req): Json<SystemMessage>,
) -> AppResult<(StatusCode, axum::Json<Value>)> {
    let id = req.client_msg_id.unwrap_or_else(Uuid::new_v4);
    let (status, message) = match state.hub.post_system(chat, id, &req.body).await? {
        Persisted::New(m) => (StatusCode::CREATED, m),
        Persisted::Replay(m) => (StatusCode::OK, m),
    };
    Ok((status, axum::Json(json!({ "message": message }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewChat {
    title: String,
    member_ids: Vec<UserId>,
    /// Who manages the group's members (and may delete its messages); the system when absent.
    creator_id: Option<UserId>,
}

/// `POST /api/service/chats`: a group chat of the given users; no friendship needed.
pub async fn create_chat(
    State(state): State<AppState>,
    _: Service,
    Json(req): Json<NewChat>,
) -> AppResult<(StatusCode, axum::Json<Value>)> {
    let title = crate::validate::group_title(&req.title)?;
    if req.member_ids.len() > 1000 {
        return Err(AppError::invalid("member_ids: at most 1000 users"));
    }
    let mut conn = state.db.conn(Op::Chats).await?;
    let mut tx = conn.begin().await?;
    let max = state.config.group_max_members;
    let id = service::create_group(&mut tx, req.creator_id, title, &req.member_ids, max).await?;
    tx.commit().await?;
    conn.commit().await?;
    let chat = chats::for_newcomers(&mut conn, id).await?;
    announce_new(&state, &mut conn, &chat).await;
    Ok((StatusCode::CREATED, axum::Json(json!({ "chat": chat }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMembers {
    user_ids: Vec<UserId>,
}

/// `POST /api/service/chats/{id}/members`: adds users to a group chat; no friendship needed.
pub async fn add_members(
    State(state): State<AppState>,
    _: Service,
    Path(chat): Path<ChatId>,
    Json(req): Json<NewMembers>,
) -> AppResult<axum::Json<Value>> {
    if req.user_ids.is_empty() || req.user_ids.len() > 1000 {
        return Err(AppError::invalid("user_ids: 1 to 1000 users"));
    }
    let mut ids = req.user_ids;
    ids.sort_unstable();
    ids.dedup();
    let mut conn = state.db.conn(Op::Chats).await?;
    let mut tx = conn.begin().await?;
    members::lock_for_service(&mut tx, chat).await?;
    service::check_users(&mut tx, "user_ids", &ids).await?;
    let added = members::insert(&mut tx, chat, &ids, state.config.group_max_members).await?;
    tx.commit().await?;
    conn.commit().await?;
    if !added.is_empty() {
        announce_change(&state, &mut conn, chat, &added, &[]).await;
    }
    let view = chats::for_newcomers(&mut conn, chat).await?;
    Ok(axum::Json(json!({ "chat": view })))
}

/// `DELETE /api/service/chats/{id}/members/{user_id}`: takes a user out of a group chat.
pub async fn remove_member(
    State(state): State<AppState>,
    _: Service,
    Path((chat, user)): Path<(ChatId, UserId)>,
) -> AppResult<StatusCode> {
    let mut conn = state.db.conn(Op::Chats).await?;
    let mut tx = conn.begin().await?;
    members::lock_for_service(&mut tx, chat).await?;
    members::delete(&mut tx, chat, user).await?;
    tx.commit().await?;
    conn.done().await?;
    announce_departure(&state, chat, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalUser {
    display_name: Option<String>,
}

/// `PUT /api/service/users/external/{subject}`: the XFChat user of the app's user id
/// `subject` (a token's `sub`), created when new; a display name given replaces the old one.
pub async fn external_user(
    State(state): State<AppState>,
    _: Service,
    Path(subject): Path<String>,
    Json(req): Json<ExternalUser>,
) -> AppResult<axum::Json<Value>> {
    if subject.is_empty() || subject.len() > 255 {
        return Err(AppError::invalid("subject: 1 to 255 bytes"));
    }
    crate::validate::text("subject", &subject)?;
    let name = req.display_name.as_deref().map(str::trim);
    if let Some(n) = name {
        crate::validate::text("display_name", n)?;
        if n.is_empty() || n.chars().count() > 64 {
            return Err(AppError::invalid("display_name: 1 to 64 characters"));
        }
    }
    let mut conn = state.db.conn(Op::Accounts).await?;
    let id = service::external_user(&mut conn, &subject, name).await?;
    let user = users::by_id(&mut conn, id)
        .await?
        .ok_or(AppError::NotFound)?;
    conn.done().await?;
    Ok(axum::Json(json!({ "user": user })))
}

/// `POST /api/service/users/{id}/revoke`: ends every session of the user and refuses every
/// token of the app's issued to them so far; their sockets close with 4002 on every node.
pub async fn revoke_user(
    State(state): State<AppState>,
    _: Service,
    Path(user): Path<UserId>,
) -> AppResult<StatusCode> {
    let mut conn = state.db.conn(Op::Accounts).await?;
    if user.0 == 0 || users::by_id(&mut conn, user).await?.is_none() {
        return Err(AppError::NotFound);
    }
    super::sessions::end_all(&state, &mut conn, user, None).await?;
    state
        .tokens
        .revoked()
        .revoke_issued_before(&mut conn, user, Utc::now())
        .await?;
    sqlx::query("DELETE FROM ws_tickets WHERE user_id = $1")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    conn.done().await?;
    state.hub.revoke(user, external_session(user));
    Ok(StatusCode::NO_CONTENT)
}

//! Signup, login and the caller's own account.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AuthUser;
use super::{AppState, ClientIp, Json};
use crate::auth::{hash_password, verify_password, Session};
use crate::db::users;
use crate::db::Op;
use crate::error::{AppError, AppResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signup {
    username: String,
    password: String,
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

fn validate_username(username: &str) -> AppResult<()> {
    let ok_chars = username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !(3..=32).contains(&username.len()) || !ok_chars {
        return Err(AppError::invalid(
            "username: 3 to 32 characters of letters, digits, '_', '-' or '.'",
        ));
    }
    Ok(())
}

pub async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<Signup>,
) -> AppResult<(StatusCode, axum::Json<Value>)> {
    state.throttles.signup(ip)?;
    validate_username(&req.username)?;
    if !(8..=128).contains(&req.password.len()) {
        return Err(AppError::invalid("password: 8 to 128 bytes"));
    }
    let display_name = req.display_name.unwrap_or_else(|| req.username.clone());
    let display_name = display_name.trim();
    crate::validate::text("display_name", display_name)?;
    if display_name.is_empty() || display_name.chars().count() > 64 {
        return Err(AppError::invalid("display_name: 1 to 64 characters"));
    }
    let hash = hash_password(req.password).await?;
    let mut conn = state.db.conn(Op::Accounts).await?;
    let user = users::create(&mut conn, &req.username, display_name, &hash).await?;
    drop(conn);
    let token = state.tokens.issue(user.id)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "user": user, "token": token })),
    ))
}

pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<Login>,
) -> AppResult<axum::Json<Value>> {
    crate::validate::text("username", &req.username)?;
    state.throttles.login(ip, &req.username)?;
    // No account can have a name outside the signup rules; answer without hashing.
    if validate_username(&req.username).is_err() {
        return Err(AppError::InvalidCredentials);
    }
    let mut conn = state.db.conn(Op::Accounts).await?;
    let found = users::find_for_login(&mut conn, &req.username).await?;
    drop(conn);
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    let verified = verify_password(req.password, hash).await?;
    match user {
        Some(user) if verified => {
            let token = state.tokens.issue(user.id)?;
            Ok(axum::Json(json!({ "user": user, "token": token })))
        }
        _ => Err(AppError::InvalidCredentials),
    }
}

/// Revokes the token this request carries, and closes the sockets opened with it.
pub async fn logout(State(state): State<AppState>, session: Session) -> AppResult<StatusCode> {
    let mut conn = state.db.conn(Op::Accounts).await?;
    state
        .tokens
        .revoked()
        .revoke(&mut conn, session.user, session.jti, session.expires_at())
        .await?;
    state.hub.revoke(session.user, session.jti);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> AppResult<axum::Json<Value>> {
    let mut conn = state.db.conn(Op::Accounts).await?;
    let user = users::by_id(&mut conn, me)
        .await?
        .ok_or(AppError::Unauthorized("the token's user no longer exists"))?;
    Ok(axum::Json(json!({ "user": user })))
}

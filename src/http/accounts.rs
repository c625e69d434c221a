//! Signup, login and the caller's own account: its password and its deletion.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AuthUser;
use super::{sessions, AppState, ClientIp, Json};
use crate::auth::{hash_password, verify_password, Session};
use crate::db::users::{self, User};
use crate::db::{presence, Op};
use crate::error::{AppError, AppResult};
use crate::ids::UserId;

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
    validate_password("password", &req.password)?;
    let display_name = req.display_name.unwrap_or_else(|| req.username.clone());
    let display_name = display_name.trim();
    crate::validate::text("display_name", display_name)?;
    if display_name.is_empty() || display_name.chars().count() > 64 {
        return Err(AppError::invalid("display_name: 1 to 64 characters"));
    }
    let hash = hash_password(req.password).await?;
    let mut conn = state.db.conn(Op::Accounts).await?;
    let user = users::create(&mut conn, &req.username, display_name, &hash).await?;
    state.throttles.logged_in(ip, &req.username);
    let answer = sessions::open(&state, &mut conn, user).await?;
    conn.done().await?;
    Ok((StatusCode::CREATED, axum::Json(answer)))
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
            state.throttles.logged_in(ip, &req.username);
            let mut conn = state.db.conn(Op::Accounts).await?;
            let answer = sessions::open(&state, &mut conn, user).await?;
            conn.done().await?;
            Ok(axum::Json(answer))
        }
        _ => Err(AppError::InvalidCredentials),
    }
}

pub async fn me(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> AppResult<axum::Json<Value>> {
    let mut conn = state.db.conn(Op::Accounts).await?;
    let user = users::by_id(&mut conn, me)
        .await?
        .ok_or(AppError::Unauthorized("the token's user no longer exists"))?;
    let (_, hidden) = presence::of(&mut conn, me).await?;
    Ok(axum::Json(
        json!({ "user": user, "show_presence": !hidden }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    show_presence: bool,
}

/// `PATCH /api/auth/me`: whether friends see when the caller is online and was last seen.
/// Friends are told at once: hidden reads as offline, without a time.
pub async fn update_me(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Json(req): Json<Settings>,
) -> AppResult<axum::Json<Value>> {
    state.throttles.user_action(me)?;
    let (user, now) = {
        let mut conn = state.db.conn(Op::Accounts).await?;
        presence::set_hidden(&mut conn, me, !req.show_presence).await?;
        conn.commit().await?;
        let user = users::by_id(&mut conn, me)
            .await?
            .ok_or(AppError::Unauthorized("the token's user no longer exists"))?;
        let (now, _) = presence::of(&mut conn, me).await?;
        conn.done().await?;
        (user, now)
    };
    state.hub.tell_presence(vec![now]).await?;
    Ok(axum::Json(
        json!({ "user": user, "show_presence": req.show_presence }),
    ))
}

fn validate_password(field: &str, password: &str) -> AppResult<()> {
    if !(8..=128).contains(&password.len()) {
        return Err(AppError::invalid(format!("{field}: 8 to 128 bytes")));
    }
    Ok(())
}

/// Checks `password` against the caller's, under the login limits; returns the account.
async fn check_password(
    state: &AppState,
    ip: std::net::IpAddr,
    me: UserId,
    password: String,
) -> AppResult<User> {
    let mut conn = state.db.conn(Op::Accounts).await?;
    let user = users::by_id(&mut conn, me)
        .await?
        .ok_or(AppError::Unauthorized("the token's user no longer exists"))?;
    state.throttles.login(ip, &user.username)?;
    let hash = users::find_for_login(&mut conn, &user.username)
        .await?
        .map(|(_, hash)| hash);
    drop(conn);
    if !verify_password(password, hash).await? {
        return Err(AppError::InvalidCredentials);
    }
    Ok(user)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /api/auth/password`: changes the password and ends every other session.
pub async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    session: Session,
    Json(req): Json<PasswordChange>,
) -> AppResult<StatusCode> {
    validate_password("new_password", &req.new_password)?;
    check_password(&state, ip, session.user, req.current_password).await?;
    let hash = hash_password(req.new_password).await?;
    let mut conn = state.db.conn(Op::Accounts).await?;
    users::set_password(&mut conn, session.user, &hash).await?;
    sessions::end_all(&state, &mut conn, session.user, Some(session.sid)).await?;
    conn.done().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deletion {
    password: String,
}

/// `DELETE /api/auth/me`: deletes the account. Its messages stay in their chats under a
/// deleted account's name; it leaves every group (the others hear it), loses its friends,
/// requests, blocks and sessions, and its username is free again.
pub async fn delete_me(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    session: Session,
    Json(req): Json<Deletion>,
) -> AppResult<StatusCode> {
    check_password(&state, ip, session.user, req.password).await?;
    let mut conn = state.db.conn(Op::Accounts).await?;
    let groups = users::delete(&mut conn, session.user).await?;
    sessions::end_all(&state, &mut conn, session.user, None).await?;
    conn.done().await?;
    for chat in groups {
        super::members::announce_departure(&state, chat, session.user).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

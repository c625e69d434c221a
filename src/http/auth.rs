//! The extractors that turn a bearer token into the caller: [`Session`] (which token) and
//! [`AuthUser`] (who).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use crate::auth::{external_session, Session};
use crate::db::{service, Op};
use crate::error::{AppError, AppResult};
use crate::ids::UserId;

/// The authenticated caller of an HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub UserId);

/// The token from `Authorization: Bearer <token>`, if the header is there and well formed.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The session of `token`: one of XFChat's own tokens, or, when configured, one of the app's
/// (whose user is created on first use).
pub async fn authenticate(state: &AppState, token: &str) -> AppResult<Session> {
    let own = state.tokens.verify(token);
    let Some(external) = &state.external else {
        return own;
    };
    if !matches!(own, Err(AppError::Unauthorized("invalid token"))) {
        return own;
    }
    let claims = external.verify(token).await?;
    let user = {
        let mut conn = state.db.conn(Op::Accounts).await?;
        let user =
            service::external_user(&mut conn, &claims.subject, claims.name.as_deref()).await?;
        conn.done().await?;
        user
    };
    let session = Session {
        user,
        jti: claims.jti,
        sid: external_session(user),
        expires: claims.expires,
        issued: claims.issued,
    };
    if state.tokens.is_revoked(&session) {
        return Err(AppError::Unauthorized("token revoked"));
    }
    Ok(session)
}

impl FromRequestParts<AppState> for Session {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = bearer_token(parts).ok_or(AppError::Unauthorized("missing bearer token"))?;
        authenticate(state, token).await
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Session::from_request_parts(parts, state)
            .await
            .map(|s| AuthUser(s.user))
    }
}

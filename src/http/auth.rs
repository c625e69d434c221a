//! The extractors that turn a bearer token into the caller: [`Session`] (which token) and
//! [`AuthUser`] (who).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use crate::auth::Session;
use crate::error::AppError;
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

impl FromRequestParts<AppState> for Session {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = bearer_token(parts).ok_or(AppError::Unauthorized("missing bearer token"))?;
        state.tokens.verify(token)
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

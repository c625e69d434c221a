//! The one API error type. Every failure a client can see has a status, a snake_case code and a
//! sentence, rendered as `{"error": {"code": ..., "message": ...}}`. Causes go to the log only.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::protocol::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("request body is larger than the limit")]
    PayloadTooLarge,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    /// Over a rate limit; the client may try again after the duration.
    #[error("too many requests; slow down")]
    RateLimited(std::time::Duration),
    #[error("{0}")]
    TooManyConnections(String),
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
    #[error("the database is unavailable; retry shortly")]
    Unavailable,
    #[error("the request took longer than the server allows")]
    Timeout,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::RateLimited(_) | Self::TooManyConnections(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded | Self::Unavailable | Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code clients branch on; also used in WebSocket `error` frames.
    /// How long a client should wait before trying again, when the error says.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::RateLimited(wait) => Some(*wait),
            _ => None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidJson(_) => ErrorCode::InvalidJson,
            Self::InvalidInput(_) => ErrorCode::InvalidInput,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::InvalidCredentials => ErrorCode::InvalidCredentials,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::Conflict { code, .. } => *code,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::TooManyConnections(_) => ErrorCode::TooManyConnections,
            Self::Overloaded => ErrorCode::Overloaded,
            Self::Unavailable => ErrorCode::Unavailable,
            Self::Timeout => ErrorCode::Timeout,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        let lost = matches!(
            err,
            sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)
        ) || matches!(&err, sqlx::Error::Database(db) if db.code().is_some_and(is_connection_lost));
        let data = is_data_error(&err);
        let kind = match err {
            sqlx::Error::PoolTimedOut => "timeout",
            _ if lost => "connection",
            _ if data => "data",
            _ => "query",
        };
        metrics::counter!(crate::metrics::DB_ERRORS, "kind" => kind).increment(1);
        match err {
            sqlx::Error::PoolTimedOut => Self::Overloaded,
            _ if lost => {
                tracing::warn!(error = %err, "database unreachable");
                Self::Unavailable
            }
            // A second line of defence behind the checks at the edge: input PostgreSQL cannot
            // store is the client's error, not the server's.
            _ if data => Self::invalid("input holds a value the database cannot store"),
            other => Self::Internal(other.into()),
        }
    }
}

/// True for SQLSTATE class 22 (data exception: bad encoding, NUL, out of range), which an input
/// value causes rather than the database or the query.
pub fn is_data_error(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")))
}

/// True when PostgreSQL refused a statement because of one of the values in it (class 22, data
/// exception, or 23, integrity constraint violation) rather than because the database failed.
pub fn is_input_error(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")))
}

/// SQLSTATE classes that mean the server went away rather than that the query was wrong:
/// 08 (connection exception) and 57P (operator intervention: shutdown, terminated backend).
fn is_connection_lost(code: std::borrow::Cow<'_, str>) -> bool {
    code.starts_with("08") || code.starts_with("57P")
}

/// True when `err` is a unique-constraint violation on `constraint`, so a query site can turn
/// it into a domain error.
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some(constraint))
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Self::Internal(ref cause) = self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let status = self.status();
        let body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match self {
            Self::Overloaded | Self::Unavailable => Some(1),
            // Whole seconds, rounded up: a client that waits that long finds budget again.
            Self::RateLimited(wait) => Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

//! Attachments: uploaded to a chat as the raw body of a request, streamed into the database a
//! chunk at a time (never held whole), and served to the chat's members only.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::AuthUser;
use super::extract::{Path, Query};
use super::AppState;
use crate::db::attachments::{self, CHUNK};
use crate::db::Op;
use crate::error::{AppError, AppResult};
use crate::ids::{ChatId, UserId};

/// Images a browser shows in the page; anything else is offered as a download.
const INLINE: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
];

/// The `Retry-After` past the daily quota: the window slides, so room comes back as the day's
/// uploads age; an hour is a fair guess, not a promise.
const QUOTA_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    filename: Option<String>,
}

/// `POST /api/chats/{id}/attachments?filename=`: the body is the file, `Content-Type` its type.
/// Answers 201 `{"attachment": {id, chat_id, content_type, filename, size, created_at}}`.
pub async fn upload(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(chat): Path<ChatId>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> AppResult<(StatusCode, axum::Json<Value>)> {
    state.throttles.user_action(me)?;
    let content_type = content_type(&headers)?;
    let filename = q.filename.as_deref().map(filename).transpose()?;
    let max = state.config.attachment_max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(AppError::PayloadTooLarge);
    }
    let id = {
        let mut conn = state.db.conn(Op::Attachments).await?;
        let used = attachments::uploaded_today(&mut conn, me).await?;
        if used as u64 >= state.config.attachment_quota_bytes {
            return Err(AppError::RateLimited(QUOTA_WAIT));
        }
        let id = attachments::start(&mut conn, chat, me, &content_type, filename.as_deref())
            .await?
            .ok_or(AppError::NotFound)?;
        conn.done().await?;
        id
    };
    let stored = match receive(&state, id, body, max).await {
        Ok(size) => finish(&state, id, size).await,
        Err(e) => Err(e),
    };
    match stored {
        Ok(attachment) => Ok((
            StatusCode::CREATED,
            axum::Json(json!({ "attachment": attachment })),
        )),
        Err(e) => {
            abandon(&state, id).await;
            Err(e)
        }
    }
}

/// Reads the body into chunks of [`CHUNK`] bytes, storing each as it fills; answers the size.
async fn receive(state: &AppState, id: Uuid, body: Body, max: u64) -> AppResult<i64> {
    let mut stream = body.into_data_stream();
    let mut chunk = Vec::with_capacity(CHUNK);
    let (mut n, mut size) = (0i32, 0u64);
    while let Some(frame) = stream.next().await {
        let bytes = frame.map_err(|_| AppError::invalid("the upload broke off"))?;
        size += bytes.len() as u64;
        if size > max {
            return Err(AppError::PayloadTooLarge);
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let take = (CHUNK - chunk.len()).min(rest.len());
            chunk.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if chunk.len() == CHUNK {
                store(state, id, n, &chunk).await?;
                n += 1;
                chunk.clear();
            }
        }
    }
    if !chunk.is_empty() {
        store(state, id, n, &chunk).await?;
    }
    if size == 0 {
        return Err(AppError::invalid("an attachment needs at least one byte"));
    }
    Ok(size as i64)
}

async fn store(state: &AppState, id: Uuid, n: i32, data: &[u8]) -> AppResult<()> {
    let mut conn = state.db.conn(Op::Attachments).await?;
    attachments::put_chunk(&mut conn, id, n, data).await?;
    conn.done().await
}

async fn finish(state: &AppState, id: Uuid, size: i64) -> AppResult<attachments::Attachment> {
    let mut conn = state.db.conn(Op::Attachments).await?;
    let done = attachments::finish(&mut conn, id, size).await?;
    conn.done().await?;
    Ok(done)
}

/// Drops a failed upload now (the daily sweep would, later).
async fn abandon(state: &AppState, id: Uuid) {
    let dropped = async {
        let mut conn = state.db.conn(Op::Attachments).await?;
        attachments::abandon(&mut conn, id).await?;
        conn.done().await
    };
    if let Err(e) = dropped.await {
        tracing::warn!(error = %e, "could not drop a failed upload; the sweep will");
    }
}

/// `GET /api/attachments/{id}`: the file, to members of its chat only (404 for anyone else).
pub async fn download(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<Uuid>,
) -> AppResult<Response> {
    let (attachment, chunks) = found(&state, id, me).await?;
    let inline = INLINE.contains(&attachment.content_type.as_str());
    let name = attachment.filename.as_deref().unwrap_or("attachment");
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        percent_encoded(name)
    );
    let db = state.db.clone();
    let body = futures_util::stream::unfold(0, move |n| {
        let db = db.clone();
        async move {
            if n >= chunks {
                return None;
            }
            let read = async {
                let mut conn = db.conn(Op::Attachments).await?;
                let data = attachments::chunk(&mut conn, id, n).await?;
                conn.done().await?;
                Ok::<_, AppError>(Bytes::from(data))
            };
            Some((read.await, n + 1))
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| AppError::Internal(e.into()));
    h.insert(header::CONTENT_TYPE, value(&attachment.content_type)?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(attachment.size));
    h.insert(header::CONTENT_DISPOSITION, value(&disposition)?);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Whatever a file holds, it runs nothing if opened on its own.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    Ok(response)
}

async fn found(
    state: &AppState,
    id: Uuid,
    reader: UserId,
) -> AppResult<(attachments::Attachment, i32)> {
    let mut conn = state.db.conn(Op::Attachments).await?;
    let found = attachments::for_member(&mut conn, id, reader).await?;
    conn.done().await?;
    found.ok_or(AppError::NotFound)
}

/// The type of an upload, `type/subtype` lowercased without parameters.
fn content_type(headers: &HeaderMap) -> AppResult<String> {
    let bad = || AppError::invalid("Content-Type: the file's media type, such as image/png");
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?;
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) && essence.len() <= 127 => Ok(essence),
        _ => Err(bad()),
    }
}

/// A file name as given, without a path: 1 to 255 bytes, no control characters or slashes.
fn filename(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 255
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(AppError::invalid(
            "filename: 1 to 255 bytes, without slashes or control characters",
        ));
    }
    Ok(name.to_owned())
}

/// RFC 5987 encoding for `filename*`.
fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

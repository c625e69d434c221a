//! `GET /api/search?q=`: the caller's messages search (see `db::search`).

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AuthUser;
use super::extract::Query;
use super::AppState;
use crate::db::{search, Op};
use crate::error::{AppError, AppResult};

const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 50;
/// Deepest page: a search is for finding, not for reading everything.
const MAX_OFFSET: i64 = 1000;
const MAX_QUERY_CHARS: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    q: String,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Answers `{"results": [{message, rank, highlight}], "next_offset": N|null}`, best first.
pub async fn messages(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Query(req): Query<SearchQuery>,
) -> AppResult<axum::Json<Value>> {
    state.throttles.user_action(me)?;
    let q = req.q.trim();
    crate::validate::text("q", q)?;
    if q.is_empty() || q.chars().count() > MAX_QUERY_CHARS {
        return Err(AppError::invalid(format!(
            "q: 1 to {MAX_QUERY_CHARS} characters"
        )));
    }
    let limit = req.limit.unwrap_or(DEFAULT_PAGE);
    let offset = req.offset.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) || !(0..=MAX_OFFSET).contains(&offset) {
        return Err(AppError::invalid(format!(
            "limit: 1 to {MAX_PAGE}; offset: 0 to {MAX_OFFSET}"
        )));
    }
    let mut conn = state.db.conn(Op::History).await?;
    let results = search::messages(&mut conn, me, q, limit, offset).await?;
    let next =
        (results.len() as i64 == limit && offset + limit <= MAX_OFFSET).then_some(offset + limit);
    Ok(axum::Json(
        json!({ "results": results, "next_offset": next }),
    ))
}

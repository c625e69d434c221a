//! Liveness and readiness. Readiness uses the raw pool, outside the guard: the guard keeps a
//! connection in reserve for it, so it never queues behind user traffic.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let pool = state.db.pool();
    let probe = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool),
    )
    .await;
    let ready = matches!(probe, Ok(Ok(1)));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": if ready { "up" } else { "down" },
        "pool": { "size": pool.size(), "idle": pool.num_idle(), "max": pool.options().get_max_connections() },
        "permits_available": state.db.permits_available(),
    });
    (status, axum::Json(body))
}

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

/// Prometheus text format. Pool gauges and process figures are refreshed at each scrape.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.db.sample(state.config.db_permits);
    process_collector().collect();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let collector = metrics_process::Collector::new("xfchat_");
        collector.describe();
        collector
    })
}

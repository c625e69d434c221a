//! The HTTP API: shared state, the router, and one file per resource.

mod accounts;
mod attachments;
mod auth;
mod chats;
mod client_ip;
mod deadline;
mod entries;
mod extract;
mod friends;
mod health;
mod members;
mod search;
mod serve;
mod service;
mod sessions;
mod web;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::external::ExternalTokens;
use crate::auth::Tokens;
use crate::config::Config;
use crate::db::Db;
use crate::error::AppError;
use crate::hub::Hub;
use crate::metrics as m;
use crate::throttle::Throttles;

pub use client_ip::ClientIp;
pub use extract::Json;
pub use serve::{serve, PeerAddr};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub tokens: Tokens,
    /// The app's own tokens, when XFCHAT_EXTERNAL_JWT_SECRET or _JWKS_URL is set.
    pub external: Option<Arc<ExternalTokens>>,
    pub hub: Arc<Hub>,
    pub metrics: PrometheusHandle,
    pub throttles: Arc<Throttles>,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/signup", post(accounts::signup))
        .route("/auth/login", post(accounts::login))
        .route(
            "/auth/me",
            get(accounts::me)
                .patch(accounts::update_me)
                .delete(accounts::delete_me),
        )
        .route("/auth/password", post(accounts::change_password))
        .route("/auth/refresh", post(sessions::refresh))
        .route("/auth/ws-ticket", post(sessions::ws_ticket))
        .route("/auth/logout", post(sessions::logout))
        .route("/auth/logout-all", post(sessions::logout_all))
        .route("/friends", get(friends::list))
        .route("/friends/{user_id}", delete(friends::remove))
        .route(
            "/friends/requests",
            post(friends::send).get(friends::pending),
        )
        .route("/friends/requests/{id}/accept", post(friends::accept))
        .route("/friends/requests/{id}/decline", post(friends::decline))
        .route("/friends/requests/{id}/cancel", post(friends::cancel))
        .route("/chats", get(chats::list).post(chats::create_group))
        .route("/chats/direct/{user_id}", put(chats::direct))
        .route("/chats/{id}", get(chats::get))
        .route("/chats/{id}/messages", get(chats::history))
        .route(
            "/chats/{id}/messages/{key}",
            put(chats::send)
                .patch(entries::edit)
                .delete(entries::delete),
        )
        .route(
            "/chats/{id}/messages/{seq}/reactions/{emoji}",
            put(entries::react).delete(entries::unreact),
        )
        .route("/chats/{id}/read", post(chats::read))
        .route("/search", get(search::messages))
        .route("/chats/{id}/attachments", post(attachments::upload))
        .route("/attachments/{id}", get(attachments::download))
        .route("/chats/{id}/leave", post(members::leave))
        .route("/chats/{id}/members", post(members::add))
        .route("/chats/{id}/members/{user_id}", delete(members::remove))
        .route(
            "/users/{id}/block",
            post(friends::block).delete(friends::unblock),
        )
        .route("/service/chats", post(service::create_chat))
        .route("/service/chats/{id}/messages", post(service::post_message))
        .route("/service/chats/{id}/members", post(service::add_members))
        .route(
            "/service/chats/{id}/members/{user_id}",
            delete(service::remove_member),
        )
        .route(
            "/service/users/external/{subject}",
            put(service::external_user),
        )
        .route("/service/users/{id}/revoke", post(service::revoke_user));
    let public = Router::new()
        .merge(web::routes())
        .nest("/api", api)
        .route("/ws", get(ws::upgrade))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    let public = if state.config.admin_listen.is_some() {
        public
    } else {
        public.route("/metrics", get(health::metrics))
    };
    finish(public, state)
}

/// The admin address's routes (XFCHAT_ADMIN_LISTEN): metrics and health, nothing of the API.
pub fn admin_router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    finish(admin, state)
}

/// The layers every router gets: the error shape for unknown routes, body limit, deadline,
/// metrics and panic containment.
fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { AppError::NotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.config.http.request_timeout,
            deadline,
        ))
        .layer(axum::middleware::from_fn(track))
        .layer(CatchPanicLayer::custom(|_| {
            AppError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .with_state(state)
}

/// Answers 503 `timeout` when a handler runs past the request timeout, so no request holds its
/// connection (and whatever it took from the pool guard) for ever. An upgrade's handler only
/// prepares the 101 answer; the socket it leads to is the hub's and has its own limits.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => AppError::Timeout.into_response(),
    }
}

/// Counts and times every request by its route template (never the raw path, which holds ids).
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = tokio::time::Instant::now();
    let response = next.run(req).await;
    let class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!(m::HTTP_DURATION, "route" => route.clone()).record(started.elapsed());
    metrics::counter!(m::HTTP_REQUESTS, "route" => route, "status" => class).increment(1);
    response
}

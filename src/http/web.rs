//! The web chat (clients/web) and the JavaScript library it runs on (clients/js/src), built
//! into the binary so that `xfchat serve` alone serves a working client at `/`.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::error::AppError;

const JS: &str = "text/javascript; charset=utf-8";

/// The page's own files, by path.
const PAGE: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../clients/web/index.html"),
    ),
    ("/app.js", JS, include_str!("../../clients/web/app.js")),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../clients/web/style.css"),
    ),
];

/// The library's modules, served under `/js/`.
const LIBRARY: &[(&str, &str)] = &[
    ("index.js", include_str!("../../clients/js/src/index.js")),
    ("api.js", include_str!("../../clients/js/src/api.js")),
    ("client.js", include_str!("../../clients/js/src/client.js")),
    ("codec.js", include_str!("../../clients/js/src/codec.js")),
    (
        "entries.js",
        include_str!("../../clients/js/src/entries.js"),
    ),
    (
        "emitter.js",
        include_str!("../../clients/js/src/emitter.js"),
    ),
];

/// Only this origin's scripts, styles and sockets: a message body can never run as code.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    let mut router = Router::new().route("/js/{file}", get(library));
    for &(path, kind, body) in PAGE {
        router = router.route(path, get(move || async move { file(kind, body) }));
    }
    router
}

async fn library(Path(name): Path<String>) -> Response {
    match LIBRARY.iter().find(|(file, _)| *file == name) {
        Some((_, body)) => file(JS, body),
        None => AppError::NotFound.into_response(),
    }
}

fn file(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            // Files change with the binary: revalidate, so an upgrade is seen at once.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

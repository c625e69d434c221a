//! The web chat served at `/` from the binary.

use crate::common::spawn_app;

#[tokio::test]
async fn the_web_chat_and_its_library_are_served_with_a_policy_that_runs_only_their_own_scripts() {
    let app = spawn_app().await;
    let page = app.get_raw("/").await;
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/app.js">"#));

    for path in [
        "/app.js",
        "/style.css",
        "/js/index.js",
        "/js/client.js",
        "/js/api.js",
    ] {
        let res = app.get_raw(path).await;
        assert_eq!(res.status(), 200, "{path}");
    }
    let app_js = app.get_raw("/app.js").await.text().await.unwrap();
    assert!(app_js.contains("from './js/index.js'"));
    // Only the library's browser modules: not the MessagePack one, not arbitrary paths.
    for path in ["/js/msgpack.js", "/js/..%2Fapp.js", "/js/"] {
        let res = app.get_raw(path).await;
        assert_eq!(res.status(), 404, "{path}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    // The API and health routes are unchanged beside it.
    assert_eq!(app.get_raw("/readyz").await.status(), 200);
    assert_eq!(app.get_raw("/api/auth/me").await.status(), 401);
}

use reqwest::StatusCode;

use crate::common::{error_code, spawn_app_with};

#[tokio::test]
async fn pool_of_two_under_100_concurrent_requests_answers_success_or_overloaded_and_stays_ready() {
    let app = spawn_app_with(|s| {
        s.db_max_connections = 2;
        s.db_permit_timeout_ms = 20;
    })
    .await;
    let alice = app.signup("alice").await;
    let url = format!("{}/api/chats", app.base);
    let requests = (0..100).map(|_| {
        let req = app.client.get(&url).bearer_auth(&alice.token).send();
        async move {
            let res = req.await.expect("every request gets an answer");
            let status = res.status();
            let retry_after = res.headers().get("retry-after").is_some();
            let body: serde_json::Value = res.json().await.unwrap();
            (status, retry_after, body)
        }
    });
    let results = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        futures_util::future::join_all(requests),
    )
    .await
    .expect("no request hangs");
    let (mut ok, mut overloaded) = (0, 0);
    for (status, retry_after, body) in results {
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(error_code(&body), "overloaded");
                assert!(retry_after, "503 carries Retry-After");
                overloaded += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok > 0, "some requests succeed");
    assert!(
        overloaded > 0,
        "with one permit and a 20 ms wait, 100 at once must overload"
    );
    let res = app.get_raw("/readyz").await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn readiness_reports_the_pool_and_liveness_answers() {
    let app = spawn_app_with(|_| {}).await;
    let res = app.get_raw("/healthz").await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.get_raw("/readyz").await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["database"], "up");
    assert!(body["pool"]["size"].as_u64().unwrap() >= 1);
    assert!(body["pool"]["idle"].is_u64());
}

#[tokio::test]
async fn metrics_are_exported_in_prometheus_format_without_id_labels() {
    let app = spawn_app_with(|_| {}).await;
    let alice = app.signup("alice").await;
    app.get("/api/chats/12345", &alice).await;
    let res = app.get_raw("/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    for name in [
        "xfchat_db_up",
        "xfchat_db_pool_connections{state=\"idle\"}",
        "xfchat_db_permits{state=\"available\"}",
        "xfchat_http_requests_total{route=\"/api/chats/{id}\",status=\"4xx\"}",
        "xfchat_process_resident_memory_bytes",
        "xfchat_build_info{",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(!text.contains("12345"), "a raw id leaked into a label");
}

use reqwest::StatusCode;

use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec, ErrorCode, ServerFrame};

use crate::common::{error_code, metric, metrics_text, spawn_app_with, TestApp, TestDb, SECRET};
use crate::startup::{serve_binary, Process};
use crate::ws::Ws;

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
    // In the labels, that is: a value may hold those digits by chance.
    let leaked = text
        .lines()
        .filter_map(|l| l.split_once('{').and_then(|(_, rest)| rest.split_once('}')))
        .any(|(labels, _)| labels.contains("12345"));
    assert!(!leaked, "a raw id leaked into a label:\n{text}");
}

#[tokio::test]
async fn counters_that_alerts_read_are_exported_from_startup() {
    let app = spawn_app_with(|_| {}).await;
    let text = app.get_raw("/metrics").await.text().await.unwrap();
    for name in [
        "xfchat_db_permit_timeouts_total",
        "xfchat_persist_failures_total{code=\"persist_failed\"}",
        "xfchat_persist_failures_total{code=\"overloaded\"}",
        "xfchat_ws_error_frames_total{code=\"overloaded\"}",
        "xfchat_ws_rate_limited_total{kind=\"send\"}",
        "xfchat_rate_limited_total{limit=\"login_account\"}",
        "xfchat_ws_upgrades_refused_total{reason=\"server_full\"}",
        "xfchat_persist_worker_restarts_total",
        "xfchat_ws_connection_panics_total",
        "xfchat_ws_frames_received_total{type=\"send\"}",
        "xfchat_ws_sends_refused_total{code=\"persist_failed\",cause=\"server\"}",
        "xfchat_ws_sends_refused_total{code=\"rate_limited\",cause=\"client\"}",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{text}"
        );
    }
}

#[tokio::test]
async fn with_an_admin_address_metrics_are_served_there_and_not_on_the_public_one() {
    let app = spawn_app_with(|s| s.admin_listen = Some("127.0.0.1:0".into())).await;
    let admin = app
        .server
        .as_ref()
        .unwrap()
        .admin_addr()
        .expect("admin address");
    let public = app.get_raw("/metrics").await;
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let scraped = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(scraped.text().await.unwrap().contains("xfchat_db_up"));
    let api = reqwest::get(format!("http://{admin}/api/chats"))
        .await
        .unwrap();
    assert_eq!(
        api.status(),
        StatusCode::NOT_FOUND,
        "no API on the admin address"
    );
}

#[test]
fn debug_output_of_the_command_line_settings_and_config_hides_secrets() {
    use clap::Parser;
    let cli = xfchat::config::Cli::parse_from([
        "xfchat",
        "--database-url",
        "postgres://app:hunter2-password@db.internal:5432/chat",
        "--jwt-secret",
        "a-jwt-secret-that-is-long-enough-to-pass",
    ]);
    let config = cli.settings.validate().unwrap();
    for shown in [
        format!("{cli:?}"),
        format!("{:?}", cli.settings),
        format!("{config:?}"),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("a-jwt-secret"), "{shown}");
        assert!(shown.contains("db.internal"), "{shown}");
    }
}

/// One server process of its own, so that its counters count this test's sends only.
#[tokio::test]
async fn sends_refused_count_against_the_send_objective_only_when_the_server_is_at_fault() {
    let db = TestDb::create().await;
    let env = [
        ("JWT_SECRET", SECRET),
        ("DATABASE_URL", db.url.as_str()),
        ("XFCHAT_MESSAGE_MAX_BYTES", "100"),
        ("XFCHAT_DB_MAX_CONNECTIONS", "3"),
        ("XFCHAT_SIGNUP_RATE_PER_MIN", "0"),
        ("XFCHAT_SOCIAL_RATE_PER_MIN", "0"),
    ];
    let (child, base) = serve_binary(&["serve"], &env).await;
    let _server = Process(child);
    let app = TestApp::at(&base, db);
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let chat = app.group(&alice, &[&bob]).await;
    let mut ws = Ws::connect(&base, &alice, Codec::Json).await;
    // Too large: the client's fault.
    let too_large = refusal(&mut ws, chat, "x".repeat(200)).await;
    assert_eq!(too_large, ErrorCode::InvalidInput);
    // The database refuses connections: the server's.
    app.db.accept_connections(false).await;
    let code = refusal(&mut ws, chat, "hello".into()).await;
    assert!(
        matches!(code, ErrorCode::PersistFailed | ErrorCode::Overloaded),
        "{code:?}"
    );
    let text = metrics_text(&base).await;
    app.db.accept_connections(true).await;
    let series =
        |labels: &str| metric(&text, &format!("xfchat_ws_sends_refused_total{{{labels}}}"));
    assert_eq!(series("code=\"invalid_input\",cause=\"client\""), Some(1.0));
    let server = format!("code=\"{}\",cause=\"server\"", code.as_str());
    assert_eq!(series(&server), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "xfchat_ws_frames_received_total{type=\"send\"}"),
        Some(2.0)
    );
}

/// Sends `body` and returns the code of the error that answers it.
async fn refusal(ws: &mut Ws, chat: i64, body: String) -> ErrorCode {
    ws.send(&ClientFrame::Send {
        chat_id: ChatId(chat),
        client_msg_id: Uuid::new_v4(),
        body,
        reply_to: None,
        attachments: Vec::new(),
    })
    .await;
    loop {
        if let ServerFrame::Error { code, .. } = ws.next().await {
            return code;
        }
    }
}

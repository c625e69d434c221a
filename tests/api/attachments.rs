//! Attachments: streamed into PostgreSQL, carried by messages of their chat, served to members
//! only with headers that keep a file from acting as a page, gone with a deleted message.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;
use xfchat::protocol::ServerFrame;

use crate::common::{error_code, spawn_app, spawn_app_with, TestApp, User};

async fn upload(
    app: &TestApp,
    user: &User,
    chat: i64,
    content_type: &str,
    name: Option<&str>,
    bytes: Vec<u8>,
) -> (StatusCode, Value) {
    let query = name.map_or(String::new(), |n| {
        format!("?filename={}", n.replace(' ', "%20"))
    });
    let res = app
        .client
        .post(format!("{}/api/chats/{chat}/attachments{query}", app.base))
        .bearer_auth(&user.token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn download(app: &TestApp, user: &User, id: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/api/attachments/{id}", app.base))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
}

fn picture(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn an_upload_streams_into_the_database_and_only_members_read_it_back_with_safe_headers() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let mallory = app.signup("mallory").await;
    let chat = app.group(&alice, &[&bob]).await;
    let bytes = picture(600 * 1024 + 17);
    let (status, body) = upload(
        &app,
        &alice,
        chat,
        "image/PNG",
        Some("cat picture.png"),
        bytes.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let a = &body["attachment"];
    assert_eq!(
        (
            &a["content_type"],
            &a["filename"],
            &a["size"],
            &a["chat_id"]
        ),
        (
            &json!("image/png"),
            &json!("cat picture.png"),
            &json!(bytes.len()),
            &json!(chat)
        )
    );
    let id = a["id"].as_str().unwrap();
    let pool = app.db.pool().await;
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM attachment_chunks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(chunks, 3, "600 KiB in chunks of 256 KiB");

    let res = download(&app, &bob, id).await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(
        h["content-disposition"],
        "inline; filename*=UTF-8''cat%20picture.png"
    );
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("sandbox"));
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes);

    // Not a member: as if it did not exist, and no upload to their chat either.
    assert_eq!(
        download(&app, &mallory, id).await.status(),
        StatusCode::NOT_FOUND
    );
    let (status, _) = upload(&app, &mallory, chat, "image/png", None, picture(10)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        download(&app, &bob, &Uuid::new_v4().to_string())
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Anything but an image is offered as a download, never shown in the page.
    let (_, body) = upload(
        &app,
        &alice,
        chat,
        "text/html; charset=utf-8",
        Some("x.html"),
        b"<script>alert(1)</script>".to_vec(),
    )
    .await;
    let res = download(&app, &bob, body["attachment"]["id"].as_str().unwrap()).await;
    assert_eq!(res.headers()["content-type"], "text/html");
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename*=UTF-8''x.html"
    );

    for (ctype, name) in [
        ("nonsense", None),
        ("image/png", Some("../etc/passwd")),
        ("", None),
    ] {
        let (status, body) = upload(&app, &alice, chat, ctype, name, picture(10)).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_input"),
            "{ctype} {name:?}"
        );
    }
    let (status, _) = upload(&app, &alice, chat, "image/png", None, Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_whether_declared_or_streamed_and_leaves_nothing() {
    let app = spawn_app_with(|s| s.attachment_max_bytes = 300 * 1024).await;
    let alice = app.signup("alice").await;
    let chat = app.group(&alice, &[]).await;
    let (status, body) = upload(
        &app,
        &alice,
        chat,
        "image/png",
        None,
        picture(300 * 1024 + 1),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // Streamed without a length: refused once it passes the limit, its chunks dropped.
    let parts: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(picture(64 * 1024))).collect();
    let res = app
        .client
        .post(format!("{}/api/chats/{chat}/attachments", app.base))
        .bearer_auth(&alice.token)
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            parts,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let pool = app.db.pool().await;
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM attachments), (SELECT count(*) FROM attachment_chunks)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, (0, 0));
}

#[tokio::test]
async fn a_message_carries_only_its_senders_attachments_of_its_chat_and_a_delete_removes_their_bytes(
) {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let other = app.group(&alice, &[]).await;
    let mine = |body: &Value| body["attachment"]["id"].as_str().unwrap().to_owned();
    let (_, up) = upload(
        &app,
        &alice,
        chat,
        "image/jpeg",
        Some("a.jpg"),
        picture(1000),
    )
    .await;
    let photo = mine(&up);
    let (_, up) = upload(&app, &bob, chat, "image/jpeg", None, picture(10)).await;
    let bobs = mine(&up);
    let (_, up) = upload(&app, &alice, other, "image/jpeg", None, picture(10)).await;
    let elsewhere = mine(&up);
    let mut b = app.ws(&bob).await;

    let (app_, alice_) = (&app, &alice);
    let send = |atts: Vec<&str>, text: &str| {
        let path = format!("/api/chats/{chat}/messages/{}", Uuid::new_v4());
        let body = json!({ "body": text, "attachments": atts });
        async move { app_.put(&path, alice_, body).await }
    };
    let (status, body) = send(vec![&photo], "").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a photo needs no caption: {body}"
    );
    assert_eq!(body["message"]["attachments"], json!([photo]));
    let seq = body["message"]["seq"].as_i64().unwrap();
    match b
        .next_matching(|f| matches!(f, ServerFrame::Message { .. }))
        .await
    {
        ServerFrame::Message { message } => {
            assert_eq!(message.attachments, [photo.parse::<Uuid>().unwrap()])
        }
        _ => unreachable!(),
    }
    for bad in [
        vec![bobs.as_str()],
        vec![elsewhere.as_str()],
        vec!["00000000-0000-0000-0000-000000000000"],
        vec![&photo, &photo],
    ] {
        let (status, body) = send(bad.clone(), "x").await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_input"),
            "{bad:?}"
        );
    }
    let (status, _) = send(Vec::new(), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no text and no attachment");
    let (_, page) = app.get(&format!("/api/chats/{chat}/messages"), &bob).await;
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        1,
        "nothing refused was stored"
    );
    assert_eq!(page["messages"][0]["attachments"], json!([photo]));

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/chats/{chat}/messages/{seq}"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        download(&app, &bob, &photo).await.status(),
        StatusCode::NOT_FOUND
    );
    let (_, page) = app.get(&format!("/api/chats/{chat}/messages"), &bob).await;
    assert!(page["messages"][0].get("attachments").is_none(), "{page}");
}

#[tokio::test]
async fn past_the_daily_quota_a_user_s_uploads_are_refused_and_others_are_not() {
    let app = spawn_app_with(|s| s.attachment_quota_bytes = 5000).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    for _ in 0..2 {
        let (status, body) = upload(&app, &alice, chat, "image/png", None, picture(3000)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = upload(&app, &alice, chat, "image/png", None, picture(10)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let (status, _) = upload(&app, &bob, chat, "image/png", None, picture(3000)).await;
    assert_eq!(status, StatusCode::CREATED, "bob's quota is his own");
}

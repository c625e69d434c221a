use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{error_code, spawn_app, SECRET};

#[tokio::test]
async fn signup_login_and_me_return_the_same_user() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "username": "alice", "password": "correct horse" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], alice.id);
    let token = body["token"].as_str().unwrap();
    let (status, body) = app
        .call(Method::GET, "/api/auth/me", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user"]["username"], "alice");
    assert!(body["user"].get("password_hash").is_none());
}

#[tokio::test]
async fn duplicate_username_is_409_username_taken() {
    let app = spawn_app().await;
    app.signup("alice").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/signup",
            None,
            Some(json!({ "username": "ALICE", "password": "another password" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "username_taken");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let app = spawn_app().await;
    app.signup("alice").await;
    let login = |username: &'static str, password: &'static str| {
        app.call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "username": username, "password": password })),
        )
    };
    let (s1, wrong_password) = login("alice", "wrong password").await;
    let (s2, unknown_user) = login("nobody", "correct horse").await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!(s2, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&wrong_password), "invalid_credentials");
    assert_eq!(wrong_password, unknown_user);
}

#[derive(serde::Serialize)]
struct Claims {
    sub: String,
    iss: String,
    iat: u64,
    exp: u64,
}

fn token(alg: jsonwebtoken::Algorithm, secret: &str, sub: i64, exp_offset: i64) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: sub.to_string(),
        iss: "xfchat".into(),
        iat: now,
        exp: (now as i64 + exp_offset) as u64,
    };
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn tampered_expired_and_wrong_algorithm_tokens_get_401() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let good = token(jsonwebtoken::Algorithm::HS256, SECRET, alice.id, 600);
    let (status, _) = app
        .call(Method::GET, "/api/auth/me", Some(&good), None)
        .await;
    assert_eq!(status, StatusCode::OK, "a well-made token is accepted");

    let mut tampered = alice.token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let bad = [
        ("tampered", tampered),
        (
            "expired",
            token(jsonwebtoken::Algorithm::HS256, SECRET, alice.id, -60),
        ),
        (
            "wrong algorithm",
            token(jsonwebtoken::Algorithm::HS512, SECRET, alice.id, 600),
        ),
        (
            "wrong secret",
            token(
                jsonwebtoken::Algorithm::HS256,
                "another-secret-of-at-least-32-bytes!!",
                alice.id,
                600,
            ),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, t) in bad {
        let (status, body) = app.call(Method::GET, "/api/auth/me", Some(&t), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(error_code(&body), "unauthorized", "{what}");
    }
    let (status, body) = app.call(Method::GET, "/api/auth/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");
}

#[tokio::test]
async fn malformed_json_oversized_bodies_unknown_fields_and_wrong_types_get_clear_4xx() {
    let app = spawn_app().await;
    let url = format!("{}/api/auth/signup", app.base);
    let raw = |body: String| {
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        ("{\"username\":", StatusCode::BAD_REQUEST, "invalid_json"),
        (
            r#"{"username":"bob","password":"correct horse","admin":true}"#,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            r#"{"username":"bob","password":12345678}"#,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            r#"{"username":"b","password":"correct horse"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            r#"{"username":"bob","password":"short"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
    ];
    for (body, status, code) in cases {
        let res = raw(body.to_owned()).await.unwrap();
        assert_eq!(res.status(), status, "{body}");
        let json: serde_json::Value = res.json().await.unwrap();
        assert_eq!(error_code(&json), code, "{body}");
    }
    let huge = format!(
        r#"{{"username":"bob","password":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let res = raw(huge).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(error_code(&json), "payload_too_large");

    let res = app.client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "missing content type"
    );

    let (status, body) = app.call(Method::GET, "/api/nowhere", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");

    // Nothing above created an account.
    let pool = app.db.pool().await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id <> 0")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

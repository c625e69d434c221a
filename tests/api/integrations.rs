//! For the backends that build on XFChat: webhooks for members with no open socket (signed,
//! retried, once per event across nodes, nothing lost to a crash), the app's own tokens (HS256
//! and a JSON Web Key Set) and the service key's routes.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;
use xfchat::protocol::ServerFrame;

use crate::cluster::cluster_with;
use crate::common::{error_code, spawn_app_with, TestApp, User};
use crate::ws::{Ws, WAIT};

const HOOK_SECRET: &str = "webhook-secret-of-the-receiver-32-bytes!";
const APP_SECRET: &str = "the-app-backends-own-hs256-secret-32b!";
const SERVICE_KEY: &str = "service-key-of-the-apps-backend-32-bytes!";

/// A webhook receiver on loopback: records every request and answers with `status`.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start(status: u16) -> (Receiver, String) {
        let receiver = Receiver::default();
        receiver.status.store(status, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(take))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, format!("http://{addr}/hook"))
    }

    /// Every event received so far, each request's events after its signature was checked.
    fn events(&self) -> Vec<Value> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .flat_map(|(headers, body)| {
                verify(headers, body);
                let body: Value = serde_json::from_slice(body).unwrap();
                body["events"].as_array().unwrap().clone()
            })
            .collect()
    }

    /// Waits until `enough` holds of the events received, for at most `limit`.
    async fn until(&self, limit: Duration, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let events = self.events();
            if enough(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "events received: {events:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn take(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    r.requests.lock().unwrap().push((headers, body));
    AxumStatus::from_u16(r.status.load(Ordering::SeqCst)).unwrap()
}

/// What a receiver does: the signature is the HMAC-SHA256 of the raw body, and the timestamp
/// header is the signed `sent_at`.
fn verify(headers: &HeaderMap, body: &[u8]) {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers["x-xfchat-signature"].to_str().unwrap(), expected);
    let sent_at: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        headers["x-xfchat-timestamp"].to_str().unwrap(),
        sent_at["sent_at"].to_string()
    );
    let age = chrono::Utc::now().timestamp() - sent_at["sent_at"].as_i64().unwrap();
    assert!((0..60).contains(&age), "sent {age} s ago");
}

fn hooked(url: &str) -> impl FnOnce(&mut xfchat::config::Settings) + '_ {
    move |s| {
        s.integrations.webhook_url = Some(url.to_owned());
        s.integrations.webhook_secret = Some(HOOK_SECRET.to_owned());
    }
}

/// Waits until `user` has a socket open as presence counts it.
async fn until_online(app: &TestApp, user: &User) {
    let pool = app.db.pool().await;
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM presence WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(&pool)
            .await
            .unwrap();
        if n > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the socket never counted as online");
}

#[tokio::test]
async fn a_message_for_a_member_with_no_open_socket_is_posted_signed_and_a_refused_request_comes_again_with_the_same_event(
) {
    let (receiver, url) = Receiver::start(500).await;
    let app = spawn_app_with(hooked(&url)).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let carol = app.signup("carol").await;
    let chat = app.group(&alice, &[&bob, &carol]).await;
    let _carols_socket = app.ws(&carol).await;
    until_online(&app, &carol).await;
    let seq = app.say(&alice, chat, "are you coming tonight?").await;
    // Refused once, the same event comes again with the same id.
    let events = receiver
        .until(Duration::from_secs(15), |e| e.len() >= 2)
        .await;
    receiver.status.store(200, Ordering::SeqCst);
    assert_eq!(events[0]["id"], events[1]["id"]);
    assert_eq!(events[1]["attempt"], 2);
    let event = &events[0];
    assert_eq!(event["type"], "message.offline");
    // Only bob had no socket open: carol's is, alice sent it.
    assert_eq!(event["data"]["recipient_id"], bob.id);
    assert_eq!(event["data"]["chat_id"], chat);
    assert_eq!(event["data"]["message"]["seq"], seq);
    assert_eq!(event["data"]["message"]["sender_id"], alice.id);
    assert_eq!(event["data"]["message"]["body"], "are you coming tonight?");
    // Taken once the receiver answers 2xx; then the outbox is empty.
    let pool = app.db.pool().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events")
            .fetch_one(&pool)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} events never delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: HashSet<String> = receiver
        .events()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one event, delivered until taken");
    let metrics = crate::common::metrics_text(&app.base).await;
    let failed = crate::common::metric(
        &metrics,
        "xfchat_webhook_requests_total{outcome=\"failed\"}",
    );
    assert!(failed >= Some(1.0), "{metrics}");
}

#[tokio::test]
async fn a_webhook_setting_without_its_secret_or_with_an_unknown_event_is_refused_at_startup() {
    let db = crate::common::TestDb::create().await;
    let mut s = crate::common::settings(&db);
    s.integrations.webhook_url = Some("http://127.0.0.1:9/hook".into());
    let err = s.validate().unwrap_err().to_string();
    assert!(err.contains("XFCHAT_WEBHOOK_SECRET"), "{err}");
    s.integrations.webhook_secret = Some(HOOK_SECRET.into());
    s.integrations.webhook_events = vec!["message.sent".into()];
    let err = s.validate().unwrap_err().to_string();
    assert!(err.contains("unknown event"), "{err}");
    s.integrations.webhook_events = vec!["message.offline".into()];
    s.integrations.service_key = Some("short".into());
    let err = s.validate().unwrap_err().to_string();
    assert!(err.contains("XFCHAT_SERVICE_KEY is too short"), "{err}");
}

/// `n` messages of `alice` in `chat` over HTTP on `base`; returns their message ids.
async fn say_many(base: &str, alice: &User, chat: i64, n: usize) -> HashSet<i64> {
    let client = reqwest::Client::new();
    let mut ids = HashSet::new();
    for i in 0..n {
        let res = client
            .put(format!(
                "{base}/api/chats/{chat}/messages/{}",
                Uuid::new_v4()
            ))
            .bearer_auth(&alice.token)
            .json(&json!({ "body": format!("m{i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        ids.insert(body["message"]["id"].as_i64().unwrap());
    }
    ids
}

fn message_ids(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["data"]["message"]["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn nothing_is_lost_when_a_server_is_killed_between_the_commit_and_the_delivery() {
    // The receiver refuses everything while the first node lives.
    let (receiver, url) = Receiver::start(503).await;
    let env = [
        ("XFCHAT_WEBHOOK_URL", url.as_str()),
        ("XFCHAT_WEBHOOK_SECRET", HOOK_SECRET),
        ("XFCHAT_WEBHOOK_TIMEOUT_MS", "1000"),
    ];
    let mut c = cluster_with(1, &env).await;
    let alice = c.app.signup("alice").await;
    let bob = c.app.signup("bob").await;
    c.app.befriend(&alice, &bob).await;
    let chat = c.app.direct(&alice, &bob).await;
    let sent = say_many(&c.bases[0], &alice, chat, 20).await;
    // Every send was acked, so committed with its event; SIGKILL before any got through.
    c.nodes[0] = None;
    let pool = c.app.db.pool().await;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(waiting, 20);
    receiver.status.store(200, Ordering::SeqCst);
    let before = receiver.requests.lock().unwrap().len();
    let node = c.add_node().await;
    assert_eq!(node, 1);
    let events = receiver
        .until(Duration::from_secs(60), |e| {
            message_ids(e).into_iter().collect::<HashSet<_>>() == sent
        })
        .await;
    assert!(receiver.requests.lock().unwrap().len() > before);
    assert!(events.iter().all(|e| e["data"]["recipient_id"] == bob.id));
}

#[tokio::test]
async fn with_two_nodes_each_event_is_delivered_once() {
    let (receiver, url) = Receiver::start(200).await;
    let env = [
        ("XFCHAT_WEBHOOK_URL", url.as_str()),
        ("XFCHAT_WEBHOOK_SECRET", HOOK_SECRET),
        ("XFCHAT_WEBHOOK_BATCH", "5"),
    ];
    let c = cluster_with(2, &env).await;
    let alice = c.app.signup("alice").await;
    let bob = c.app.signup("bob").await;
    c.app.befriend(&alice, &bob).await;
    let chat = c.app.direct(&alice, &bob).await;
    let (a, b) = tokio::join!(
        say_many(&c.bases[0], &alice, chat, 40),
        say_many(&c.bases[1], &alice, chat, 40)
    );
    let sent: HashSet<i64> = a.union(&b).copied().collect();
    receiver
        .until(Duration::from_secs(30), |e| {
            message_ids(e).into_iter().collect::<HashSet<_>>() == sent
        })
        .await;
    // Both deliverers keep polling a while: still nothing twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = receiver.events();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in &events {
        *seen
            .entry(e["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(events.len(), 80, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1));
    // The requests were shared: more than one batch.
    assert!(receiver.requests.lock().unwrap().len() >= 80 / 5);
}

fn app_token(sub: &str, claims: Value, key: &EncodingKey, header: Header) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut all = json!({ "sub": sub, "iat": now, "exp": now + 600 });
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    encode(&header, &all, key).unwrap()
}

fn as_user(id: i64, token: String) -> User {
    User {
        id,
        username: String::new(),
        token,
        refresh: String::new(),
    }
}

async fn me(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.call(Method::GET, "/api/auth/me", Some(token), None)
        .await
}

#[tokio::test]
async fn the_app_s_own_hs256_tokens_open_http_and_sockets_as_a_user_created_on_first_use() {
    let app = spawn_app_with(|s| {
        s.integrations.external_jwt_secret = Some(APP_SECRET.into());
        s.integrations.external_jwt_issuer = Some("https://app.example".into());
        s.integrations.external_jwt_audience = Some("xfchat".into());
        s.integrations.service_key = Some(SERVICE_KEY.into());
    })
    .await;
    let key = EncodingKey::from_secret(APP_SECRET.as_bytes());
    let good = json!({ "iss": "https://app.example", "aud": "xfchat", "name": "Ada" });
    let token = app_token("app-user-42", good.clone(), &key, Header::default());
    let (status, body) = me(&app, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["display_name"], "Ada");
    let id = body["user"]["id"].as_i64().unwrap();
    // The same `sub` is the same user; another is another.
    let again = app_token("app-user-42", good.clone(), &key, Header::default());
    assert_eq!(me(&app, &again).await.1["user"]["id"], id);
    let other = app_token("app-user-43", good.clone(), &key, Header::default());
    assert_ne!(me(&app, &other).await.1["user"]["id"], id);
    // Issuer, audience, signature and expiry are checked.
    let wrong = [
        app_token(
            "app-user-42",
            json!({ "iss": "https://evil.example", "aud": "xfchat" }),
            &key,
            Header::default(),
        ),
        app_token(
            "app-user-42",
            json!({ "iss": "https://app.example", "aud": "other" }),
            &key,
            Header::default(),
        ),
        app_token(
            "app-user-42",
            good.clone(),
            &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
            Header::default(),
        ),
        app_token(
            "app-user-42",
            json!({ "iss": "https://app.example", "aud": "xfchat", "exp": 1 }),
            &key,
            Header::default(),
        ),
        app_token(
            "app-user-42",
            good.clone(),
            &key,
            Header::new(Algorithm::HS384),
        ),
        // Issuer and audience are required once configured, and `iat` may not be ahead.
        app_token(
            "app-user-42",
            json!({ "aud": "xfchat" }),
            &key,
            Header::default(),
        ),
        app_token(
            "app-user-42",
            json!({ "iss": "https://app.example" }),
            &key,
            Header::default(),
        ),
        app_token(
            "app-user-42",
            json!({ "iss": "https://app.example", "aud": "xfchat",
                    "iat": jsonwebtoken::get_current_timestamp() + 3600 }),
            &key,
            Header::default(),
        ),
    ];
    for t in &wrong {
        let (status, body) = me(&app, t).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{body}"
        );
    }
    // XFChat's own tokens still work beside them.
    let alice = app.signup("alice").await;
    assert_eq!(me(&app, &alice.token).await.0, StatusCode::OK);
    // A socket opens with the app's token, and the service revokes it: closed with 4002, and
    // the token refused from then on; a token issued later is accepted.
    let ada = as_user(id, token.clone());
    let mut ws = app.ws(&ada).await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/service/users/{id}/revoke"),
            Some(SERVICE_KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (close, _) = ws.until_closed(WAIT).await;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(4002));
    assert_eq!(me(&app, &token).await.0, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = app_token("app-user-42", good.clone(), &key, Header::default());
    assert_eq!(me(&app, &fresh).await.1["user"]["id"], id);
    // Logging out everywhere with the app's token refuses every one issued so far.
    let (status, _) = app
        .call(Method::POST, "/api/auth/logout-all", Some(&fresh), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(me(&app, &fresh).await.0, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = app_token("app-user-42", good, &key, Header::default());
    assert_eq!(me(&app, &later).await.0, StatusCode::OK);
}

// Test keys only, made for this test: two P-256 key pairs and an RSA one, with their public
// halves as JWKs.
const EC1_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglrR/DZecH2QZaCl4
pfHkOlyOwvsbxFah5D5lTbjQp0WhRANCAASsI8Lbxq0nN8cB1Z1A147+BO+YBd4/
i5ksysvo7wVe4Fbj1lMQnqiIptu8jg2tjPjhQbCoKE3Jkzqita0KQPx3
-----END PRIVATE KEY-----
";
const EC2_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQkhC7EAYMfeGK70T
fTqNIlWJeOHXGQKW0Ec3mrK89UOhRANCAASgXJFDma8MBPFuLAy1IF3Y9yOTikQZ
hCE1V6zNpe5tVfbk42cdjGA87ElI1D1dsD/c+48DiRdAUPb/HLA7RxfX
-----END PRIVATE KEY-----
";

const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDDRdH70oBwI1mk
QlfvWG/wLDlTvR+CaMq7pFj5Ai3ixHfWRCc6VE7xke83G00cd+75FM/incQeAjWX
wUjqZ2RFGEXJkFytCjuI2dWK3dzoHyKM5I85Xfnt9BOps9o8wpQXzeJHb8fsS9Rp
ZlMJUhUQLQm4pD0klbOPLKH+zPgf0npFoGpgraomRkktTIXk/fEHPZmNL84N10WN
c5RbplDAxB9tND/LR12ff0lbjnHuGnym426lg70uwDaiSqDESvRtqNttOPlheNm8
7dRhV4GuPHEZvfH8KDjEmjyi959uNdlODmW5IHi8b48mGacjs2J8enyKUJq9t6Q0
djKQFugjAgMBAAECggEAA2XQnIrHdKwOID84m8/fIBUKPlHDyEId3PFOzFkPBqtt
JmDzNHRJF1z3BkTHAmAihq+nr7AXvH9ErXT4hCjzuVwNws8XPbo4L6O9Wng3zXYq
j2cJXZyBVR7yb05+KqEmxdntk66h55Oo3i3180CRYJcCsfVxoZRVQSrWpWytmJLK
M+gMEm4QUL/bBm0t1AFPLIN3EudiWs0udTPD2/it+xotUl+HZTVgWp4KwSru6N00
xzAeTs+qBwepmLvPslFT9uBLXzlB6AbqPcpQEdktNuwpnLZsNAesKMVQyXOWcxgt
77ExbA4S2w9BU8Ff/07pnIaJ5Ps7V/nnPkJVWawD2QKBgQDhkY2/KKDzdy9rbikC
gyi+uDLOtBGkhI/hgyoBCj8w51nEM4/DLAfAvyrSV2RhlwWiNzOCHkDvK3iv2NOd
t4TCKBUpBwn9GK2jaA0drzCXwK3a9RdIiUe08vCgnq+S85jMv66if73ggGyUDJPE
gX5DDTRPG5gCaNJ8DapV0JrTDQKBgQDdnfD/0lKWxczCJSnkP4dn7Z4BKwfhDqid
M1HxXbQ2ReLj5PdgsaIwmI1UGPZ8vgYxE/dtQUyk2V5Iz+I5bHqNhVm4pMBaztud
cPcLhOXyD/hHX4kycG956p/n363qzRYx7RUOABota1r4oLx+R8GGh4+RcNzj8KPH
gc/qhA+b7wKBgEIDwyQq08/tFaevOblOgWIvrk7oTDGFykYJiQV85jl9u7u8C1rn
S+2RBQtCIFKfTDrJRP3TtNVKN6vfHS+PQf9Ak9DKCpZT3p1wGkaRuvrunPLzv7iu
1JmUb+/SAThUqmdhwc407HEDpMM/Ww+rhjRBbQmp3bb2zoMXzL4IqwcRAoGBALVh
PQvDkcDApvMHA6BBtosC2VzPYSV7n9j5VcmcDZCV5jrq/ORwvfPUB2ea/rHdvKeS
VeFfnmEVXqttKRQiirMlPud2P9CSmP/kou0UmjZhh6yyrlFP4I0B0FowoeEYdV/r
UF4jC0m9Ibl3pI4eIHAApyo8Gy2bmBADWK3x4+yVAoGADmuLJpZ7rQbaWNaG1JgJ
D9jHLyFsPHVpkKPtJV+jmftoQPYqyGl0VoiIionvQI/1NEl6ywa9xhmOXDFfh7FD
PJAcLV5f/1EgJSBydCdH0CfXxPqRBRNVKCPx+si4E9Zdadf2JglYk7qBwyX5eue8
lpdRL3CAy8aVgGd3lHvFo14=
-----END PRIVATE KEY-----
";
const RSA_N: &str = "w0XR-9KAcCNZpEJX71hv8Cw5U70fgmjKu6RY-QIt4sR31kQnOlRO8ZHvNxtNHHfu-RTP4p3EHgI1l8FI6mdkRRhFyZBcrQo7iNnVit3c6B8ijOSPOV357fQTqbPaPMKUF83iR2_H7EvUaWZTCVIVEC0JuKQ9JJWzjyyh_sz4H9J6RaBqYK2qJkZJLUyF5P3xBz2ZjS_ODddFjXOUW6ZQwMQfbTQ_y0ddn39JW45x7hp8puNupYO9LsA2okqgxEr0bajbbTj5YXjZvO3UYVeBrjxxGb3x_Cg4xJo8ovefbjXZTg5luSB4vG-PJhmnI7NifHp8ilCavbekNHYykBboIw";

fn ec_jwk(kid: &str, x: &str, y: &str) -> Value {
    json!({ "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid, "x": x, "y": y })
}

#[tokio::test]
async fn the_app_s_es256_and_rs256_tokens_are_checked_with_its_key_set_fetched_cached_and_refreshed(
) {
    let k1 = ec_jwk(
        "k1",
        "rCPC28atJzfHAdWdQNeO_gTvmAXeP4uZLMrL6O8FXuA",
        "VuPWUxCeqIim27yODa2M-OFBsKgoTcmTOqK1rQpA_Hc",
    );
    let k2 = ec_jwk(
        "k2",
        "oFyRQ5mvDATxbiwMtSBd2Pcjk4pEGYQhNVeszaXubVU",
        "9uTjZx2MYDzsSUjUPV2wP9z7jwOJF0BQ9v8csDtHF9c",
    );
    // The app's key set, served on loopback; it counts its fetches.
    let k3 =
        json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k3", "n": RSA_N, "e": "AQAB" });
    let served = Arc::new(Mutex::new(json!({ "keys": [k1, k3] })));
    let fetches = Arc::new(AtomicUsize::new(0));
    let jwks = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get({
            let (served, fetches) = (served.clone(), fetches.clone());
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                axum::Json(served.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, jwks).await });
    let app = spawn_app_with(|s| {
        s.integrations.external_jwks_url = Some(url);
        s.integrations.external_jwks_refresh_secs = 1;
    })
    .await;
    let es256 = |kid: &str| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.to_owned());
        h
    };
    let key1 = EncodingKey::from_ec_pem(EC1_PRIVATE.as_bytes()).unwrap();
    let key2 = EncodingKey::from_ec_pem(EC2_PRIVATE.as_bytes()).unwrap();
    let token = app_token("grace", json!({ "name": "Grace" }), &key1, es256("k1"));
    let (status, body) = me(&app, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["display_name"], "Grace");
    // Cached: a second token costs no fetch.
    let fetched = fetches.load(Ordering::SeqCst);
    assert_eq!(
        me(&app, &app_token("grace", json!({}), &key1, es256("k1")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(fetches.load(Ordering::SeqCst), fetched);
    // A key the set lacks, or a key claiming another's id, is refused.
    let stranger = app_token("grace", json!({}), &key2, es256("k2"));
    assert_eq!(me(&app, &stranger).await.0, StatusCode::UNAUTHORIZED);
    let forged = app_token("grace", json!({}), &key2, es256("k1"));
    assert_eq!(me(&app, &forged).await.0, StatusCode::UNAUTHORIZED);
    // The app rotates its keys: a token of the new key is accepted once the set is fetched again.
    // An RS256 token of the set's RSA key is accepted too.
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let mut rs256 = Header::new(Algorithm::RS256);
    rs256.kid = Some("k3".into());
    let (status, body) = me(&app, &app_token("linus", json!({}), &rsa, rs256)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["display_name"], "linus");
    *served.lock().unwrap() = json!({ "keys": [k1, k2, k3] });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = me(&app, &stranger).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(fetches.load(Ordering::SeqCst) > fetched);
    // A socket opens with it.
    let user = as_user(body["user"]["id"].as_i64().unwrap(), stranger);
    let _ws: Ws = app.ws(&user).await;
}

async fn service(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.call(method, path, Some(SERVICE_KEY), body).await
}

#[tokio::test]
async fn the_service_key_posts_system_messages_makes_groups_and_changes_their_members() {
    let app = spawn_app_with(|s| s.integrations.service_key = Some(SERVICE_KEY.into())).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let carol = app.signup("carol").await;
    // A wrong key, a user's token or none: 401 in the error shape, nothing done.
    for key in [
        Some("not-the-service-key-but-as-long-as-it!!"),
        Some(alice.token.as_str()),
        None,
    ] {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/service/chats",
                key,
                Some(json!({ "title": "t", "member_ids": [alice.id] })),
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{body}"
        );
    }
    // A group of users who are not friends, made by the system.
    let mut alices = app.ws(&alice).await;
    let mut bobs = app.ws(&bob).await;
    let (status, body) = service(
        &app,
        Method::POST,
        "/api/service/chats",
        Some(json!({ "title": "Order #7", "member_ids": [alice.id, bob.id] })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let chat = body["chat"]["id"].as_i64().unwrap();
    alices
        .next_matching(|f| matches!(f, ServerFrame::Chat { .. }))
        .await;
    // A system message reaches the members like any message, from sender 0.
    let id = Uuid::new_v4();
    let post = json!({ "body": "Your order has shipped", "client_msg_id": id });
    let path = format!("/api/service/chats/{chat}/messages");
    let (status, body) = service(&app, Method::POST, &path, Some(post.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["message"]["sender_id"], 0);
    let seq = body["message"]["seq"].clone();
    match alices
        .next_matching(|f| matches!(f, ServerFrame::Message { .. }))
        .await
    {
        ServerFrame::Message { message } => {
            assert_eq!(message.body, "Your order has shipped");
            assert_eq!(message.sender_id.0, 0);
        }
        _ => unreachable!(),
    }
    // A retry is recognised, never stored twice.
    let (status, body) = service(&app, Method::POST, &path, Some(post)).await;
    assert_eq!(
        (status, body["message"]["seq"].clone()),
        (StatusCode::OK, seq)
    );
    // Members talk in it although they are not friends.
    app.say(&bob, chat, "thanks!").await;
    // Add carol, remove bob: bob hears he is out.
    let (status, body) = service(
        &app,
        Method::POST,
        &format!("/api/service/chats/{chat}/members"),
        Some(json!({ "user_ids": [carol.id] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["chat"]["members"].as_array().unwrap().len(), 3);
    let (status, _) = service(
        &app,
        Method::DELETE,
        &format!("/api/service/chats/{chat}/members/{}", bob.id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let removed = bobs
        .next_matching(|f| matches!(f, ServerFrame::ChatRemoved { .. }))
        .await;
    assert!(matches!(removed, ServerFrame::ChatRemoved { .. }));
    let (status, history) = app
        .get(&format!("/api/chats/{chat}/messages"), &carol)
        .await;
    assert_eq!(status, StatusCode::OK);
    let bodies: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["Your order has shipped", "thanks!"]);
    // Bad input: unknown users, an unknown chat, an empty body; nothing changes.
    let (status, _) = service(
        &app,
        Method::POST,
        "/api/service/chats",
        Some(json!({ "title": "x", "member_ids": [999_999] })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = service(
        &app,
        Method::POST,
        "/api/service/chats/999999/messages",
        Some(json!({ "body": "hi" })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = service(&app, Method::POST, &path, Some(json!({ "body": "" }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A group made for a creator alone; unknown users named by their field.
    let (status, body) = service(
        &app,
        Method::POST,
        "/api/service/chats",
        Some(json!({ "title": "solo", "member_ids": [], "creator_id": carol.id })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["chat"]["members"][0]["id"], carol.id);
    let (status, body) = service(
        &app,
        Method::POST,
        "/api/service/chats",
        Some(json!({ "title": "x", "member_ids": [alice.id], "creator_id": 999_999 })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("creator_id"),
        "{body}"
    );
    // A display name made of an odd subject keeps to the text rules.
    let (status, body) = service(
        &app,
        Method::PUT,
        "/api/service/users/external/%20%20",
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, body["user"]["display_name"].clone()),
        (StatusCode::OK, json!("user"))
    );
    // The app's user ids map to users, created when new.
    let (status, body) = service(
        &app,
        Method::PUT,
        "/api/service/users/external/app-7",
        Some(json!({ "display_name": "Grace" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grace = body["user"]["id"].clone();
    let (_, body) = service(
        &app,
        Method::PUT,
        "/api/service/users/external/app-7",
        Some(json!({})),
    )
    .await;
    assert_eq!(body["user"]["id"], grace);
    assert_eq!(body["user"]["display_name"], "Grace");
}

#[tokio::test]
async fn the_service_key_and_the_secrets_never_reach_a_log() {
    use crate::startup::{free_listen_address, serve_binary_logging_to, Process};
    let (receiver, url) = Receiver::start(500).await;
    let db = crate::common::TestDb::create().await;
    let log = std::env::temp_dir().join(format!("xfchat-secrets-{}.log", Uuid::new_v4()));
    let file = std::fs::File::create(&log).unwrap();
    let env = [
        ("JWT_SECRET", crate::common::SECRET),
        ("DATABASE_URL", db.url.as_str()),
        ("RUST_LOG", "debug"),
        ("XFCHAT_SERVICE_KEY", SERVICE_KEY),
        ("XFCHAT_WEBHOOK_URL", url.as_str()),
        ("XFCHAT_WEBHOOK_SECRET", HOOK_SECRET),
        ("XFCHAT_EXTERNAL_JWT_SECRET", APP_SECRET),
    ];
    let (child, base) = serve_binary_logging_to(&free_listen_address(), &env, file.into()).await;
    let server = Process(child);
    let app = TestApp::at(&base, db);
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    app.befriend(&alice, &bob).await;
    let chat = app.direct(&alice, &bob).await;
    app.say(&alice, chat, "hello").await;
    let path = format!("/api/service/chats/{chat}/messages");
    let body = Some(json!({ "body": "from the system" }));
    let (status, _) = app
        .call(Method::POST, &path, Some(SERVICE_KEY), body.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let wrong = format!("{SERVICE_KEY}x");
    let (status, _) = app.call(Method::POST, &path, Some(&wrong), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The receiver refused a request, which the server logged.
    receiver
        .until(Duration::from_secs(15), |e| !e.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(text.contains("webhook request failed"), "{text}");
    for secret in [SERVICE_KEY, HOOK_SECRET, APP_SECRET, crate::common::SECRET] {
        assert!(!text.contains(secret), "a secret reached the log");
    }
}

#[tokio::test]
async fn with_message_created_chosen_every_message_is_one_event_beside_the_offline_ones() {
    let (receiver, url) = Receiver::start(200).await;
    let app = spawn_app_with(|s| {
        hooked(&url)(s);
        s.integrations.webhook_events = vec!["message.created".into(), "message.offline".into()];
    })
    .await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let carol = app.signup("carol").await;
    let chat = app.group(&alice, &[&bob, &carol]).await;
    app.say(&alice, chat, "one").await;
    app.say(&bob, chat, "two").await;
    // Two messages: one `message.created` each, and one `message.offline` per member but the
    // sender (nobody has a socket open).
    let events = receiver
        .until(Duration::from_secs(15), |e| e.len() >= 6)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = if receiver.events().len() > events.len() {
        receiver.events()
    } else {
        events
    };
    let count = |kind: &str| events.iter().filter(|e| e["type"] == kind).count();
    assert_eq!(
        (count("message.created"), count("message.offline")),
        (2, 4),
        "{events:?}"
    );
    assert!(events
        .iter()
        .filter(|e| e["type"] == "message.created")
        .all(|e| e["data"].get("recipient_id").is_none()));
}

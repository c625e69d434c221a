//! A read replica (XFCHAT_DATABASE_READ_URL) serves history and catch-up reads as far as it has
//! them, and the primary the rest: a replica that lags never leaves a gap, and membership always
//! comes from the primary. The replica here is a copy of the test database made with
//! `pg_dump`/`pg_restore`, its bodies marked, so each message shows where it was read.

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;
use xfchat::config::Settings;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec, ServerFrame};
use xfchat::server::{Migrations, Server};

use crate::common::{settings, spawn_app, TestApp, TestDb, User};
use crate::ws::Ws;

/// A copy of `app`'s database as it is now, each body replaced by `replica <seq>`.
async fn replica_of(app: &TestApp) -> TestDb {
    let replica = app.db.copy().await;
    let pool = replica.pool().await;
    sqlx::query("UPDATE messages SET body = 'replica ' || seq")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    replica
}

/// A second server on `app`'s database that reads from `read_url`.
async fn reading_from(app: &TestApp, read_url: &str) -> (Server, String) {
    let mut s: Settings = settings(&app.db);
    s.database_read_url = Some(read_url.to_owned());
    let server = Server::start(s.validate().unwrap(), Migrations::Apply)
        .await
        .expect("server starts");
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

async fn send_n(app: &TestApp, user: &User, chat: i64, n: usize) {
    for i in 0..n {
        let (status, _) = app.send(user, chat, Uuid::new_v4(), &format!("m{i}")).await;
        assert!(status.is_success());
    }
}

/// `GET` a history page from `base`: the status, and each message's seq and body.
async fn history(
    base: &str,
    user: &User,
    chat: i64,
    query: &str,
) -> (StatusCode, Vec<(i64, String)>) {
    let res = reqwest::Client::new()
        .get(format!("{base}/api/chats/{chat}/messages?{query}"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    let page = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    (
                        m["seq"].as_i64().unwrap(),
                        m["body"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (status, page)
}

/// Resumes `chat` at `after` and reads up to `synced`: each message's seq and body, asserting
/// the raw stream has no gap and no repeat.
async fn caught_up(base: &str, user: &User, chat: i64, after: i64) -> Vec<(i64, String)> {
    let mut ws = Ws::connect(base, user, Codec::Json).await;
    ws.send(&ClientFrame::Resume {
        epoch: None,
        positions: [(ChatId(chat), after)].into(),
        reference: None,
    })
    .await;
    let mut got: Vec<(i64, String)> = Vec::new();
    loop {
        match ws.next().await {
            ServerFrame::Message { message } if message.chat_id == ChatId(chat) => {
                let expected = got.last().map_or(after, |m| m.0) + 1;
                assert_eq!(message.seq, expected, "gap or repeat in the raw stream");
                got.push((message.seq, message.body));
            }
            ServerFrame::Synced { last_seq, .. } => {
                assert_eq!(got.last().map_or(after, |m| m.0), last_seq);
                return got;
            }
            ServerFrame::Error { code, .. } => panic!("error {code:?}"),
            _ => {}
        }
    }
}

fn from_replica(seq: i64) -> (i64, String) {
    (seq, format!("replica {seq}"))
}

fn from_primary(seq: i64) -> (i64, String) {
    (seq, format!("m{}", seq - 1))
}

#[tokio::test]
async fn history_and_catch_up_reads_come_from_a_replica_that_has_the_messages() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    send_n(&app, &alice, chat, 6).await;
    let replica = replica_of(&app).await;
    let (_server, base) = reading_from(&app, &replica.url).await;

    let all: Vec<_> = (1..=6).map(from_replica).collect();
    assert_eq!(
        history(&base, &bob, chat, "").await,
        (StatusCode::OK, all.clone())
    );
    assert_eq!(
        history(&base, &bob, chat, "before_seq=6&limit=2").await.1,
        vec![from_replica(4), from_replica(5)]
    );
    assert_eq!(caught_up(&base, &bob, chat, 0).await, all);
    assert_eq!(caught_up(&base, &bob, chat, 4).await, all[4..]);
}

#[tokio::test]
async fn a_replica_behind_the_primary_serves_what_it_has_and_the_primary_the_rest_without_a_gap() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    send_n(&app, &alice, chat, 5).await;
    let replica = replica_of(&app).await;
    // The replica stops at 5; the primary goes on to 9.
    send_n(&app, &alice, chat, 4).await;
    let (_server, base) = reading_from(&app, &replica.url).await;

    let expected: Vec<_> = (1..=5)
        .map(from_replica)
        .chain((6..=9).map(|seq| (seq, format!("m{}", seq - 6))))
        .collect();
    assert_eq!(
        history(&base, &bob, chat, "").await,
        (StatusCode::OK, expected.clone())
    );
    assert_eq!(caught_up(&base, &bob, chat, 0).await, expected);
    assert_eq!(caught_up(&base, &bob, chat, 3).await, expected[3..]);
    // The newest page lies wholly past the replica, whose own newest three are 3 to 5.
    assert_eq!(
        history(&base, &bob, chat, "before_seq=100&limit=3").await.1,
        expected[6..]
    );
    assert_eq!(
        history(&base, &bob, chat, "after_seq=7&limit=50").await.1,
        expected[7..]
    );
}

#[tokio::test]
async fn membership_comes_from_the_primary_so_a_member_removed_since_the_replica_s_copy_reads_nothing(
) {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    send_n(&app, &alice, chat, 3).await;
    let replica = replica_of(&app).await;
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/chats/{chat}/members/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_server, base) = reading_from(&app, &replica.url).await;

    assert_eq!(
        history(&base, &bob, chat, "").await.0,
        StatusCode::NOT_FOUND
    );
    let mut ws = Ws::connect(&base, &bob, Codec::Json).await;
    ws.send(&ClientFrame::Sync {
        chat_id: ChatId(chat),
        after_seq: 0,
        limit: None,
        reference: None,
    })
    .await;
    loop {
        match ws.next().await {
            ServerFrame::Error { .. } => break,
            ServerFrame::Message { message } => panic!("a removed member read {message:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn with_the_replica_down_reads_go_to_the_primary() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    send_n(&app, &alice, chat, 4).await;
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("postgres://postgres@127.0.0.1:{port}/nothing");
    let (_server, base) = reading_from(&app, &down).await;

    let expected: Vec<_> = (1..=4).map(from_primary).collect();
    for _ in 0..3 {
        assert_eq!(
            history(&base, &bob, chat, "").await,
            (StatusCode::OK, expected.clone())
        );
        assert_eq!(caught_up(&base, &bob, chat, 0).await, expected);
    }
}

//! The test harness: a fresh database per test and the server in-process on an ephemeral port.

use clap::Parser;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::PgPool;
use xfchat::config::{Cli, Config, Settings};
use xfchat::server::{Migrations, Server};

pub const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

/// The maintenance database the harness creates test databases from.
pub fn admin_url() -> String {
    std::env::var("XFCHAT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A PostgreSQL client tool, from PATH or the server's binaries.
pub fn pg_tool(name: &str) -> String {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("bin").join(name))
        .find(|p| p.exists());
    installed.map_or_else(|| name.to_owned(), |p| p.display().to_string())
}

/// Runs a PostgreSQL client tool; fails the test if it fails.
pub fn run(tool: &str, args: &[&str]) {
    let status = std::process::Command::new(pg_tool(tool))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{tool} {args:?}");
}

/// A database that exists for one test and is dropped when this value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = format!("xfchat_test_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPool::connect(&admin_url())
            .await
            .expect("reach the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create a test database");
        admin.close().await;
        let base = admin_url();
        let url = format!(
            "{}/{name}",
            base.rsplit_once('/').expect("admin URL names a database").0
        );
        TestDb { name, url }
    }

    /// Sets whether the database accepts connections, and ends every backend connected to it:
    /// to the server, the database went away (or came back, on a reconnect).
    pub async fn accept_connections(&self, accept: bool) {
        let admin = PgPool::connect(&admin_url()).await.unwrap();
        let name = &self.name;
        sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {accept}"))
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
    }

    /// A new database holding what this one holds now (`pg_dump` into `pg_restore`).
    pub async fn copy(&self) -> TestDb {
        let dump = std::env::temp_dir().join(format!("xfchat-{}.dump", uuid::Uuid::new_v4()));
        let dump = dump.to_str().unwrap().to_owned();
        run("pg_dump", &["--format=custom", "--file", &dump, &self.url]);
        let copy = TestDb::create().await;
        run("pg_restore", &["--no-owner", "--dbname", &copy.url, &dump]);
        std::fs::remove_file(&dump).ok();
        copy
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async code, so the cleanup gets a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(admin) = PgPool::connect(&admin_url()).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&admin)
                                .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Settings as the command line would give them, pointed at `db` and an ephemeral port.
pub fn settings(db: &TestDb) -> Settings {
    let mut s = Cli::parse_from(["xfchat"]).settings;
    s.database_url = Some(db.url.clone());
    s.jwt_secret = Some(SECRET.to_owned());
    s.listen = "127.0.0.1:0".to_owned();
    s.db_max_connections = 5;
    s.db_permits = None;
    s.db_connect_timeout_secs = 5;
    // Every test signs its users up from 127.0.0.1; the signup limit has tests of its own.
    s.signup_rate_per_min = 1000;
    // The same for friend requests and groups, whose limit has tests of its own.
    s.social_rate_per_min = 0;
    s
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// Taken by [`TestApp::stop`]; otherwise the server lives as long as the test.
    pub server: Option<Server>,
    pub db: TestDb,
}

impl TestApp {
    /// Talks to a server running elsewhere (another process) at `base`, on `db`.
    pub fn at(base: &str, db: TestDb) -> TestApp {
        TestApp {
            base: base.to_owned(),
            client: reqwest::Client::new(),
            server: None,
            db,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_config(tweak, |_| {}).await
}

/// A server on `db`, which it owns (and drops), with the tests' settings.
pub async fn spawn_app_on(db: TestDb) -> TestApp {
    let config = settings(&db).validate().expect("valid test settings");
    let server = Server::start(config, Migrations::Apply)
        .await
        .expect("server starts");
    TestApp {
        base: format!("http://{}", server.local_addr()),
        client: reqwest::Client::new(),
        server: Some(server),
        db,
    }
}

/// A server from tweaked settings whose validated [`Config`] is tweaked further (for what only
/// tests may set, such as injected faults).
pub async fn spawn_app_config(
    tweak: impl FnOnce(&mut Settings),
    tweak_config: impl FnOnce(&mut Config),
) -> TestApp {
    let db = TestDb::create().await;
    let mut s = settings(&db);
    tweak(&mut s);
    let mut config = s.validate().expect("valid test settings");
    tweak_config(&mut config);
    let server = Server::start(config, Migrations::Apply)
        .await
        .expect("server starts");
    let addr = server.local_addr();
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        server: Some(server),
        db,
    }
}

/// A signed-up user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub token: String,
    /// The session's refresh token.
    pub refresh: String,
}

impl TestApp {
    /// Shuts the server down as SIGTERM would.
    pub async fn stop(&mut self) {
        self.server
            .take()
            .expect("running")
            .stop()
            .await
            .expect("clean stop");
    }

    /// Sends a request; `body` as JSON when given. Returns the status and the parsed JSON body
    /// (`Value::Null` for an empty one).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request reaches the server");
        let status = res.status();
        let text = res.text().await.expect("read the body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is JSON: {text}"))
        };
        (status, value)
    }

    /// An unauthenticated GET, answered as it came (for health, readiness and metrics).
    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request reaches the server")
    }

    pub async fn get(&self, path: &str, user: &User) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&user.token), None).await
    }

    pub async fn post(&self, path: &str, user: &User, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&user.token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, user: &User, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(&user.token), Some(body))
            .await
    }

    pub async fn signup(&self, username: &str) -> User {
        self.account("signup", username, StatusCode::CREATED).await
    }

    /// Logs in as a signed-up user: another token of the same account.
    pub async fn login(&self, username: &str) -> User {
        self.account("login", username, StatusCode::OK).await
    }

    async fn account(&self, action: &str, username: &str, expected: StatusCode) -> User {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/api/auth/{action}"),
                None,
                Some(json!({ "username": username, "password": "correct horse" })),
            )
            .await;
        assert_eq!(status, expected, "{action} {username}: {body}");
        User {
            id: body["user"]["id"].as_i64().unwrap(),
            username: username.to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Makes `a` and `b` friends through the API.
    pub async fn befriend(&self, a: &User, b: &User) {
        let (status, body) = self
            .post(
                "/api/friends/requests",
                a,
                json!({ "username": b.username }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["request"]["id"].as_i64().unwrap();
        let (status, body) = self
            .post(&format!("/api/friends/requests/{id}/accept"), b, json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// The direct chat of `a` with `b`, friends already; returns its id.
    pub async fn direct(&self, a: &User, b: &User) -> i64 {
        let (status, body) = self
            .put(&format!("/api/chats/direct/{}", b.id), a, json!({}))
            .await;
        assert!(status.is_success(), "{body}");
        body["chat"]["id"].as_i64().unwrap()
    }

    /// A group chat of `owner` and `members` (befriended first); returns its id.
    pub async fn group(&self, owner: &User, members: &[&User]) -> i64 {
        for m in members {
            self.befriend(owner, m).await;
        }
        let ids: Vec<i64> = members.iter().map(|m| m.id).collect();
        let (status, body) = self
            .post(
                "/api/chats",
                owner,
                json!({ "title": "group", "member_ids": ids }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["chat"]["id"].as_i64().unwrap()
    }

    /// Sends `text` over HTTP, which must be stored; returns its seq.
    pub async fn say(&self, user: &User, chat: i64, text: &str) -> i64 {
        let (status, body) = self.send(user, chat, uuid::Uuid::new_v4(), text).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["message"]["seq"].as_i64().unwrap()
    }

    pub async fn send(
        &self,
        user: &User,
        chat: i64,
        client_msg_id: uuid::Uuid,
        text: &str,
    ) -> (StatusCode, Value) {
        self.put(
            &format!("/api/chats/{chat}/messages/{client_msg_id}"),
            user,
            json!({ "body": text }),
        )
        .await
    }
}

/// The `/metrics` text of the server at `base`.
pub async fn metrics_text(base: &str) -> String {
    let res = reqwest::get(format!("{base}/metrics")).await.unwrap();
    res.text().await.unwrap()
}

/// The value of an unlabelled series in a `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

/// Asserts the uniform error shape and returns its code.
pub fn error_code(body: &Value) -> &str {
    assert!(body["error"]["message"].is_string(), "error shape: {body}");
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error shape: {body}"))
}

/// `n` users who are friends of `user`, made in the database directly (signups would hash
/// passwords for seconds); returns their ids.
pub async fn friends_of(app: &TestApp, user: &User, n: i64) -> Vec<i64> {
    let pool = app.db.pool().await;
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO users (username, display_name, password_hash) \
         SELECT 'f' || g, 'f' || g, 'x' FROM generate_series(1, $1) g RETURNING id",
    )
    .bind(n)
    .fetch_all(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO friendships (user_low, user_high) \
         SELECT least($1, f), greatest($1, f) FROM unnest($2::bigint[]) f",
    )
    .bind(user.id)
    .bind(&ids)
    .execute(&pool)
    .await
    .unwrap();
    ids
}

//! Behind PgBouncer in transaction mode (XFCHAT_DATABASE_POOLER=transaction): queries go
//! through the pooler, each unit of work one transaction; LISTEN and migrations go past it
//! (XFCHAT_DATABASE_DIRECT_URL). The pooler here has fewer server connections than the nodes
//! have clients, so sessions are shared and any statement left outside a transaction, or any
//! write left uncommitted, shows.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::cluster::{
    cluster_on, concurrent_senders_are_seen_in_the_database_order,
    events_take_effect_on_the_other_node, Cluster,
};
use crate::common::{admin_url, TestDb};
use crate::startup::free_listen_address;

/// A PgBouncer in transaction mode in front of the tests' PostgreSQL, stopped on drop.
pub struct Pooler {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pgbouncer() -> String {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("pgbouncer is installed (scripts/test installs it: apt-get install pgbouncer)")
        .to_owned()
}

impl Pooler {
    /// `server_connections` per database and user: PgBouncer's `default_pool_size`.
    pub fn start(server_connections: u32) -> Pooler {
        let upstream = url::Url::parse(&admin_url()).unwrap();
        let (host, port) = (
            upstream.host_str().unwrap().to_owned(),
            upstream.port().unwrap_or(5432),
        );
        let user = upstream.username().to_owned();
        let listen = free_listen_address();
        let listen_port: u16 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
        let dir = std::env::temp_dir().join(format!("xfchat-pgbouncer-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        let ini = format!(
            "[databases]\n* = host={host} port={port}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen_port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {users}\n\
             pool_mode = transaction\ndefault_pool_size = {server_connections}\n\
             max_client_conn = 500\nignore_startup_parameters = extra_float_digits\n",
            users = dir.join("users.txt").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        let mut command = Command::new(pgbouncer());
        // PgBouncer refuses to run as root.
        if unsafe { libc::geteuid() } == 0 {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        // Stopped by Drop from here on, a failed wait below included.
        let pooler = Pooler {
            child,
            port: listen_port,
            dir,
        };
        for _ in 0..100 {
            if TcpStream::connect(&listen).is_ok() {
                return pooler;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pgbouncer did not listen on {listen}");
    }

    /// `db`'s URL through the pooler.
    pub fn url(&self, db: &TestDb) -> String {
        let mut url = url::Url::parse(&db.url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }
}

/// `n` nodes on a fresh database behind `pooler`.
async fn behind(pooler: &Pooler, n: usize) -> Cluster {
    let db = TestDb::create().await;
    let (through, direct) = (pooler.url(&db), db.url.clone());
    cluster_on(
        db,
        n,
        &[
            ("DATABASE_URL", through.as_str()),
            ("XFCHAT_DATABASE_POOLER", "transaction"),
            ("XFCHAT_DATABASE_DIRECT_URL", direct.as_str()),
        ],
    )
    .await
}

#[tokio::test]
async fn behind_a_transaction_mode_pooler_concurrent_sends_on_three_nodes_are_stored_and_seen_in_order(
) {
    let pooler = Pooler::start(2);
    let c = behind(&pooler, 3).await;
    concurrent_senders_are_seen_in_the_database_order(&c).await;
}

#[tokio::test]
async fn behind_a_transaction_mode_pooler_events_reach_the_other_node_through_the_direct_listener()
{
    let pooler = Pooler::start(2);
    let c = behind(&pooler, 2).await;
    events_take_effect_on_the_other_node(&c).await;
}

#[tokio::test]
async fn behind_a_transaction_mode_pooler_every_account_and_friend_write_is_committed() {
    let pooler = Pooler::start(2);
    let c = behind(&pooler, 1).await;
    let app = &c.app;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let carol = app.signup("carol").await;

    // A refresh rotates: the new refresh token works, the old one is refused from then on.
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": alice.refresh })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rotated = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": rotated })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Friends, a block and an unblock, a group and its members.
    app.befriend(&alice, &bob).await;
    app.befriend(&alice, &carol).await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/users/{}/block", bob.id),
            Some(&carol.token),
            None,
        )
        .await;
    assert!(status.is_success());
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/users/{}/block", bob.id),
            Some(&carol.token),
            None,
        )
        .await;
    assert!(status.is_success());
    let (status, body) = app
        .post(
            "/api/chats",
            &alice,
            json!({ "title": "group", "member_ids": [bob.id] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let chat = body["chat"]["id"].as_i64().unwrap();
    let (status, body) = app
        .post(
            &format!("/api/chats/{chat}/members"),
            &alice,
            json!({ "user_ids": [carol.id] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app.send(&bob, chat, Uuid::new_v4(), "hello").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .post(
            &format!("/api/chats/{chat}/read"),
            &carol,
            json!({ "seq": 1 }),
        )
        .await;
    assert!(status.is_success());

    // A password change, then a deletion.
    let (status, body) = app
        .post(
            "/api/auth/password",
            &bob,
            json!({ "current_password": "correct horse", "new_password": "battery staple" }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = app
        .call(
            Method::DELETE,
            "/api/auth/me",
            Some(&carol.token),
            Some(json!({ "password": "correct horse" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // All of it is in the database.
    let pool = app.db.pool().await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM friendships").await,
        1,
        "alice and bob"
    );
    assert_eq!(count("SELECT count(*) FROM blocks").await, 0);
    assert_eq!(count("SELECT count(*) FROM messages").await, 1);
    assert_eq!(
        count("SELECT count(*) FROM conversation_members").await,
        2,
        "carol left with her account"
    );
    assert_eq!(
        count("SELECT count(*) FROM users WHERE deleted_at IS NOT NULL").await,
        1
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "username": "bob", "password": "battery staple" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the new password is stored");
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": alice.refresh })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the first rotation is stored"
    );
}

#[test]
fn a_transaction_mode_pooler_without_a_direct_url_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_xfchat"))
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", "postgres://u@127.0.0.1:6432/db")
        .env("JWT_SECRET", crate::common::SECRET)
        .env("XFCHAT_DATABASE_POOLER", "transaction")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("XFCHAT_DATABASE_DIRECT_URL is required"),
        "{stderr}"
    );
}

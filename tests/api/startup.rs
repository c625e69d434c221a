use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{settings, TestDb, SECRET};
use xfchat::server::{Migrations, Server};

/// The server binary: this build's, or `XFCHAT_TEST_BIN` (a release build, for fault runs at the
/// speed operators see).
fn xfchat(args: &[&str], env: &[(&str, &str)]) -> Command {
    let bin = std::env::var("XFCHAT_TEST_BIN").unwrap_or(env!("CARGO_BIN_EXE_xfchat").into());
    let mut cmd = Command::new(bin);
    cmd.args(args).env_clear().env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts the binary with `args` on an ephemeral port and waits until it is ready; returns the
/// process and its base URL.
pub async fn serve_binary(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    serve_with(args, &format!("127.0.0.1:{port}"), env, Stdio::null()).await
}

/// An address on loopback with a port free right now.
pub fn free_listen_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A server process, killed with SIGKILL when dropped (a failing test included).
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// `xfchat serve` on `listen`, ready, with its stderr going to `stderr`.
pub async fn serve_binary_logging_to(
    listen: &str,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> (std::process::Child, String) {
    serve_with(&["serve"], listen, env, stderr).await
}

async fn serve_with(
    args: &[&str],
    listen: &str,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> (std::process::Child, String) {
    let mut args = args.to_vec();
    args.extend(["--listen", listen]);
    let mut child = xfchat(&args, env).stderr(stderr).spawn().unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = client.get(format!("http://{listen}/readyz")).send().await;
        if matches!(ready, Ok(ref r) if r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "server never became ready");
        assert!(child.try_wait().unwrap().is_none(), "server exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, format!("http://{listen}"))
}

pub fn run(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let out = xfchat(args, env).output().expect("run xfchat");
    (out, started.elapsed())
}

pub fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn missing_database_url_stops_startup_within_a_second_naming_it() {
    let (out, took) = run(&["serve"], &[("JWT_SECRET", SECRET), ("DATABASE_URL", "")]);
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        last_line(&out).contains("DATABASE_URL"),
        "{}",
        last_line(&out)
    );
}

#[test]
fn short_jwt_secret_stops_startup_naming_it() {
    let (out, _) = run(
        &[],
        &[
            ("JWT_SECRET", "too-short"),
            ("DATABASE_URL", "postgres://127.0.0.1/x"),
        ],
    );
    assert!(!out.status.success());
    let line = last_line(&out);
    assert!(line.contains("JWT_SECRET") && line.contains("32"), "{line}");
    assert!(
        !line.contains("too-short"),
        "the secret is not echoed: {line}"
    );
}

#[test]
fn unreachable_database_stops_startup_within_the_connect_bound_without_leaking_the_password() {
    let (out, took) = run(
        &["serve"],
        &[
            ("JWT_SECRET", SECRET),
            (
                "DATABASE_URL",
                "postgres://xf:hunter2-secret@127.0.0.1:1/xfchat",
            ),
            ("XFCHAT_DB_CONNECT_TIMEOUT_SECS", "2"),
        ],
    );
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(last_line(&out).contains("127.0.0.1:1/xfchat"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
}

#[tokio::test]
async fn failing_migration_stops_startup_naming_the_migration() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    // A stray table in the way makes the first migration fail.
    sqlx::query("CREATE TABLE users (stray int)")
        .execute(&pool)
        .await
        .unwrap();
    let (out, _) = run(
        &["serve"],
        &[("JWT_SECRET", SECRET), ("DATABASE_URL", &db.url)],
    );
    assert!(!out.status.success());
    let line = last_line(&out);
    assert!(
        line.contains("migration 20261125000001 (users) failed"),
        "{line}"
    );
}

#[tokio::test]
async fn no_migrate_refuses_a_database_behind_the_binary_until_migrate_runs_and_sigterm_exits_zero()
{
    let db = TestDb::create().await;
    let env = [("JWT_SECRET", SECRET), ("DATABASE_URL", db.url.as_str())];
    let (out, _) = run(&["serve", "--no-migrate"], &env);
    assert!(!out.status.success());
    assert!(
        last_line(&out).contains("run `xfchat migrate`"),
        "{}",
        last_line(&out)
    );

    let (out, _) = run(&["migrate"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (child, _) = serve_binary(&["serve", "--no-migrate"], &env).await;
    let mut child = child;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
}

#[tokio::test]
async fn two_servers_starting_together_apply_each_migration_once() {
    let db = TestDb::create().await;
    let config = || settings(&db).validate().unwrap();
    let (a, b) = tokio::join!(
        Server::start(config(), Migrations::Apply),
        Server::start(config(), Migrations::Apply)
    );
    let (a, b) = (
        a.expect("first server starts"),
        b.expect("second server starts"),
    );
    let pool = db.pool().await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        applied as usize,
        xfchat::db::MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .count()
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn every_database_connection_carries_the_statement_timeout() {
    let db = TestDb::create().await;
    let mut s = settings(&db);
    s.db_statement_timeout_ms = 1500;
    let config = s.validate().unwrap();
    let pool = xfchat::db::connect(&config).await.unwrap();
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(timeout, "1500ms");
    let slow = sqlx::query("SELECT pg_sleep(3)").execute(&pool).await;
    assert!(
        slow.is_err(),
        "PostgreSQL cancels a statement past the timeout"
    );
}

#[tokio::test]
async fn a_database_url_with_several_hosts_serves_from_the_first_that_answers_and_takes_writes() {
    let db = crate::common::TestDb::create().await;
    // A host where nothing listens comes first, as a dead primary would.
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let url = match rest.split_once('@') {
        Some((user, hosts)) => format!("{scheme}://{user}@127.0.0.1:1,{hosts}"),
        None => format!("{scheme}://127.0.0.1:1,{rest}"),
    };
    let url = format!("{url}?target_session_attrs=read-write");
    let mut settings = crate::common::settings(&db);
    settings.database_url = Some(url);
    let config = settings.validate().expect("a multi-host URL is valid");
    assert_eq!(config.database_targets.hosts.len(), 2);
    let server = xfchat::server::Server::start(config, xfchat::server::Migrations::Apply)
        .await
        .expect("starts on the host that answers");
    let app = crate::common::TestApp::at(&format!("http://{}", server.local_addr()), db);
    let alice = app.signup("alice").await;
    let chat = app.group(&alice, &[]).await;
    let (status, _) = app
        .send(&alice, chat, uuid::Uuid::new_v4(), "written")
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    server.stop().await.unwrap();
}

/// A TCP proxy to `to` that can be cut: every connection through it ends, and no more are
/// taken, as when a database host dies.
struct Proxy {
    addr: String,
    tasks: tokio::task::JoinSet<()>,
}

impl Proxy {
    async fn start(to: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let to = to.clone();
                conns.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Proxy { addr, tasks }
    }

    fn cut(&mut self) {
        self.tasks.abort_all();
    }
}

#[tokio::test]
async fn with_several_hosts_a_server_follows_its_database_to_another_host_when_its_host_dies() {
    let db = crate::common::TestDb::create().await;
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let (user, rest) = rest.split_once('@').map_or(("", rest), |(u, r)| (u, r));
    let (host, path) = rest.split_once('/').unwrap();
    let mut proxy = Proxy::start(host.to_owned()).await;
    let at = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    // The proxy is the first host (the primary); the database itself the second (the standby
    // that takes over).
    let url = format!(
        "{scheme}://{at}{},{host}/{path}?target_session_attrs=read-write",
        proxy.addr
    );
    let mut settings = crate::common::settings(&db);
    settings.database_url = Some(url);
    let server = xfchat::server::Server::start(
        settings.validate().unwrap(),
        xfchat::server::Migrations::Apply,
    )
    .await
    .unwrap();
    let app = crate::common::TestApp::at(&format!("http://{}", server.local_addr()), db);
    let alice = app.signup("alice").await;
    let chat = app.group(&alice, &[]).await;
    proxy.cut();
    // Sends fail while the pool is on the dead host, then succeed on the other, resent.
    let id = uuid::Uuid::new_v4();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, _) = app.send(&alice, chat, id, "after the failover").await;
        if status == reqwest::StatusCode::CREATED {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never followed the database to the other host: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let metrics = crate::common::metrics_text(&app.base).await;
    let failovers = crate::common::metric(&metrics, "xfchat_db_failovers_total");
    assert!(failovers >= Some(1.0), "{failovers:?}");
    server.stop().await.unwrap();
}

//! The NATS bus (`XFCHAT_BUS=nats://…`): the cluster's guarantees over core NATS subjects, each
//! test under subjects of its own. The first tests use the NATS server at
//! `XFCHAT_TEST_NATS_URL` (default `nats://127.0.0.1:4222`); the outage test starts and kills
//! its own `nats-server`. Each is skipped, with the reason printed, where no NATS is there.

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::cluster::{
    cluster_with, concurrent_senders_are_seen_in_the_database_order,
    events_take_effect_on_the_other_node, read_in_order, reader, send_many, stored_order, Cluster,
};
use crate::common::{metric, metrics_text, TestDb, SECRET};
use crate::startup::{free_listen_address, last_line, run, Process};

/// Whether a NATS server answers at `addr` (host:port) with its `INFO` line.
async fn answers(addr: &str) -> bool {
    let hello = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut info = [0u8; 4];
        stream.read_exact(&mut info).await.ok()?;
        (&info == b"INFO").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), hello).await,
        Ok(Some(()))
    )
}

/// The shared NATS server's URL, or None (said why) when none answers.
async fn shared_nats() -> Option<String> {
    let url = std::env::var("XFCHAT_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let addr = url.trim_start_matches("nats://").to_owned();
    if answers(&addr).await {
        Some(url)
    } else {
        eprintln!("SKIPPED: no NATS server answers at {url} (set XFCHAT_TEST_NATS_URL)");
        None
    }
}

/// `n` nodes on one fresh database whose bus is the NATS server at `url`.
async fn nats_cluster(n: usize, url: &str) -> Cluster {
    let prefix = format!("test.{}", Uuid::new_v4().simple());
    let c = cluster_with(n, &[("XFCHAT_BUS", url), ("XFCHAT_BUS_PREFIX", &prefix)]).await;
    // The bus is NATS: no node listens on the database.
    let pool = c.app.db.pool().await;
    let listening: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(listening, 0, "no node listens on PostgreSQL");
    c
}

#[tokio::test]
async fn over_nats_concurrent_senders_on_every_node_are_seen_in_the_database_order() {
    let Some(url) = shared_nats().await else {
        return;
    };
    concurrent_senders_are_seen_in_the_database_order(&nats_cluster(3, &url).await).await;
}

#[tokio::test]
async fn over_nats_new_chats_read_markers_removals_and_logouts_take_effect_on_the_other_nodes() {
    let Some(url) = shared_nats().await else {
        return;
    };
    events_take_effect_on_the_other_node(&nats_cluster(2, &url).await).await;
}

/// A `nats-server` of this test's own on `addr` with `extra` arguments, answering.
async fn own_nats(binary: &str, addr: &str, extra: &[&str]) -> Process {
    let (host, port) = addr.split_once(':').unwrap();
    let child = Command::new(binary)
        .args(["-a", host, "-p", port])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let process = Process(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !answers(addr).await {
        assert!(tokio::time::Instant::now() < deadline, "nats-server starts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    process
}

/// The `nats-server` binary, if this machine has one.
fn nats_binary() -> Option<String> {
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|b| std::path::Path::new(b).exists())
        .map(str::to_owned)
        .or_else(|| {
            let found = Command::new("which").arg("nats-server").output().ok()?;
            let path = String::from_utf8(found.stdout).ok()?.trim().to_owned();
            (!path.is_empty()).then_some(path)
        });
    if binary.is_none() {
        eprintln!("SKIPPED: no nats-server binary to start and stop");
    }
    binary
}

#[tokio::test]
async fn over_a_nats_that_requires_a_password_nodes_log_in_with_the_url_s_credentials() {
    let Some(binary) = nats_binary() else { return };
    let addr = free_listen_address();
    let _nats = own_nats(&binary, &addr, &["--user", "xfchat", "--pass", "s3c/ret"]).await;
    let c = nats_cluster(2, &format!("nats://xfchat:s3c%2Fret@{addr}")).await;
    events_take_effect_on_the_other_node(&c).await;
}

#[tokio::test]
async fn over_nats_a_nats_outage_mid_traffic_loses_nothing_and_duplicates_nothing() {
    let Some(binary) = nats_binary() else { return };
    let addr = free_listen_address();
    let nats = own_nats(&binary, &addr, &[]).await;
    let c = nats_cluster(2, &format!("nats://{addr}")).await;
    let sender = c.app.signup("sender").await;
    let watcher = c.app.signup("watcher").await;
    let chat = c.app.group(&sender, &[&watcher]).await;
    let mut far = reader(&c, 1, &watcher, chat, 0).await;
    let mut ws = c.ws(0, &sender).await;
    send_many(&mut ws, chat, 50).await;
    let mut read = read_in_order(&mut far, chat, 0, 50).await;

    // NATS goes away: sends are still acked, and the far node reads them from the database.
    drop(nats);
    send_many(&mut ws, chat, 50).await;
    read.extend(read_in_order(&mut far, chat, 50, 100).await);

    // It comes back: the nodes listen again and hear each other.
    let _nats = own_nats(&binary, &addr, &[]).await;
    send_many(&mut ws, chat, 50).await;
    read.extend(read_in_order(&mut far, chat, 100, 150).await);
    assert_eq!(read, stored_order(&c.app, chat).await);
    far.expect_silence(Duration::from_millis(500)).await;
    let metrics = metrics_text(&c.bases[1]).await;
    let repaired = metric(&metrics, "xfchat_bus_repaired_messages_total");
    assert!(repaired.is_some_and(|n| n > 0.0), "repaired: {repaired:?}");
    let reconnects = metric(&metrics, "xfchat_bus_reconnects_total");
    assert!(
        reconnects.is_some_and(|n| n > 0.0),
        "reconnects: {reconnects:?}"
    );
}

#[tokio::test]
async fn an_unreachable_nats_bus_stops_startup_naming_it_without_leaking_its_token() {
    let db = TestDb::create().await;
    let (out, took) = run(
        &["serve"],
        &[
            ("JWT_SECRET", SECRET),
            ("DATABASE_URL", db.url.as_str()),
            ("XFCHAT_BUS", "nats://s3cret-token@127.0.0.1:1"),
        ],
    );
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = last_line(&out);
    assert!(
        line.contains("bus") && line.contains("127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "token leaked: {stderr}");
}

#[test]
fn a_bus_that_is_neither_postgres_nor_off_nor_nats_stops_startup_naming_the_setting() {
    for (bus, prefix) in [
        ("redis://127.0.0.1", "xfchat"),
        ("nats://127.0.0.1", "a..b"),
    ] {
        let (out, _) = run(
            &["serve"],
            &[
                ("JWT_SECRET", SECRET),
                ("DATABASE_URL", "postgres://127.0.0.1/x"),
                ("XFCHAT_BUS", bus),
                ("XFCHAT_BUS_PREFIX", prefix),
            ],
        );
        assert!(!out.status.success());
        let line = last_line(&out);
        assert!(line.contains("XFCHAT_BUS"), "{line}");
    }
}

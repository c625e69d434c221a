//! The server's resident memory stays bounded under a storm of password hashes.

use futures_util::stream::{self, StreamExt};
use serde_json::json;

use crate::common::{TestDb, SECRET};
use crate::startup::serve_binary;

/// Resident set size of process `pid`, in bytes.
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

#[tokio::test]
async fn resident_memory_stays_within_64_mib_of_idle_after_a_burst_of_signups_and_logins() {
    let db = TestDb::create().await;
    let env = [
        ("JWT_SECRET", SECRET),
        ("DATABASE_URL", db.url.as_str()),
        ("XFCHAT_SIGNUP_RATE_PER_MIN", "100000"),
        ("XFCHAT_LOGIN_IP_RATE_PER_MIN", "100000"),
    ];
    let (mut child, base) = serve_binary(&["serve"], &env).await;
    let client = reqwest::Client::new();
    let idle = resident(child.id());
    const USERS: usize = 150;
    for path in ["signup", "login"] {
        let answers: Vec<u16> = stream::iter(0..USERS)
            .map(|i| {
                let req = client
                    .post(format!("{base}/api/auth/{path}"))
                    .json(&json!({ "username": format!("user{i}"), "password": "correct horse" }));
                async move { req.send().await.unwrap().status().as_u16() }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let ok = if path == "signup" { 201 } else { 200 };
        assert!(answers.iter().all(|s| *s == ok), "{path}: {answers:?}");
    }
    let after = resident(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let grown = after.saturating_sub(idle);
    eprintln!("resident: idle {idle} B, after {USERS} signups and logins {after} B");
    assert!(
        grown < 64 * 1024 * 1024,
        "resident memory grew by {} MiB (idle {} MiB)",
        grown / (1024 * 1024),
        idle / (1024 * 1024)
    );
}

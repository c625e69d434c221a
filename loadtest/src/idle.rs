//! The `idle` scenario: many open sockets doing nothing but answering heartbeats, and what they
//! cost the server in memory.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::cli::Args;
use crate::client::connect;
use crate::report::Idle;
use crate::setup::Layout;

/// Opens `connections` sockets (spread over the accounts), keeps them open and reading for the
/// run's duration, and reports the server's memory per connection from its `/metrics`.
pub async fn idle(args: &Args, layout: &Layout) -> Idle {
    let before = server_metric(args, RSS).await;
    let started = Instant::now();
    let accounts = &layout.accounts;
    let opened: Vec<_> = futures_util::stream::iter(0..args.connections)
        .map(|i| connect(args, i, &accounts[i % accounts.len()].token))
        .buffer_unordered(64)
        .collect()
        .await;
    let connect_seconds = started.elapsed().as_secs_f64();
    let failures = opened.iter().filter(|r| r.is_err()).count();
    let readers: Vec<_> = opened
        .into_iter()
        .flatten()
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    let open = readers.len();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let after = server_metric(args, RSS).await;
    for reader in readers {
        reader.abort();
    }
    Idle {
        connections: open,
        connection_failures: failures,
        connect_seconds,
        server_rss_before_bytes: before,
        server_rss_after_bytes: after,
        bytes_per_connection: before
            .zip(after)
            .filter(|_| open > 0)
            .map(|(b, a)| (a - b) / open as f64),
    }
}

const RSS: &str = "xfchat_process_resident_memory_bytes";

/// One unlabelled figure from the server's `/metrics`, if it exports it.
pub async fn server_metric(args: &Args, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", args.url))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

//! The `idle` scenario: many open sockets doing nothing but answering heartbeats, and what they
//! cost the server in memory.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::cli::Args;
use crate::client::connect;
use crate::process;
use crate::report::Idle;
use crate::setup::Layout;

/// Opens `connections` sockets (spread over the accounts), keeps them open and reading for the
/// run's duration, and reports the server's memory per connection from its `/metrics`.
pub async fn idle(args: &Args, layout: &Layout) -> Idle {
    let before = process::server(args).await.map(|u| u.rss_bytes);
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
    let after = process::server(args).await.map(|u| u.rss_bytes);
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

//! The HTTP connection loop: accepts TCP connections within a cap, serves each with hyper under
//! a header-read timeout, hands upgrades to the hub, and drains gracefully at shutdown.
//!
//! axum's own `serve` has neither a header timeout nor a connection cap, so a client that opens
//! connections and never finishes its headers could hold them forever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::HttpConfig;
use crate::metrics as m;

/// Serves `app` on `listener` until `stop` is cancelled, then lets open requests finish for at
/// most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpConfig,
    stop: CancellationToken,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Frames are small and latency matters: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .with_upgrades();
        let stop = stop.clone();
        metrics::gauge!(m::HTTP_CONNECTIONS).increment(1.0);
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            // At shutdown a connection finishes the request it is serving, then closes.
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "http connection ended with an error");
            }
            metrics::gauge!(m::HTTP_CONNECTIONS).decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period passed; closing remaining HTTP connections");
    }
}

/// The address of the TCP peer, as the connection loop recorded it.
pub type PeerAddr = ConnectInfo<SocketAddr>;

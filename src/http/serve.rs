//! The HTTP connection loop: accepts TCP connections within a cap for the server and one per
//! client address, serves each with hyper under a header-read timeout and a write timeout, hands
//! upgrades to the hub, and drains gracefully at shutdown.
//!
//! axum's own `serve` has neither timeouts nor caps, so a client that opens connections and
//! never finishes its headers, or never reads its answers, could hold them for ever.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::deadline::WriteDeadline;
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
    let addresses = Addresses::default();
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
        let Some(address_slot) = addresses.take(peer.ip(), &limits) else {
            // Closing costs the server nothing; the global slot goes back at once.
            metrics::counter!(m::HTTP_CLOSED, "reason" => "address_cap").increment(1);
            continue;
        };
        // Frames are small and latency matters: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let (io, disarm) = WriteDeadline::new(tcp, limits.write_timeout);
        let service = app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
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
            // hyper is done with the connection; if it was upgraded, the socket times its own
            // writes from here on.
            disarm.store(true, Ordering::Relaxed);
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "http connection ended with an error");
            }
            metrics::gauge!(m::HTTP_CONNECTIONS).decrement(1.0);
            drop((slot, address_slot));
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

/// Open connections per client address.
#[derive(Default, Clone)]
struct Addresses(Arc<DashMap<IpAddr, usize>>);

/// One connection of an address, given back on drop.
struct AddressSlot {
    addresses: Addresses,
    ip: Option<IpAddr>,
}

impl Addresses {
    /// A slot for a connection from `ip`, or `None` if the address holds its most. Trusted
    /// proxies speak for many clients and are not counted.
    fn take(&self, ip: IpAddr, limits: &HttpConfig) -> Option<AddressSlot> {
        if limits.trusted_proxies.iter().any(|net| net.contains(&ip)) {
            return Some(AddressSlot {
                addresses: self.clone(),
                ip: None,
            });
        }
        let mut open = self.0.entry(ip).or_default();
        if *open >= limits.max_per_ip {
            return None;
        }
        *open += 1;
        Some(AddressSlot {
            addresses: self.clone(),
            ip: Some(ip),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.addresses.0.remove_if_mut(&ip, |_, open| {
                *open -= 1;
                *open == 0
            });
        }
    }
}

/// The address of the TCP peer, as the connection loop recorded it.
pub type PeerAddr = ConnectInfo<SocketAddr>;

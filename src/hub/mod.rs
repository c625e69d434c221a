//! The realtime hub: the registry of online connections, the connection tasks, and the persist
//! path that commits messages before anyone hears of them.

mod backlog;
mod connection;
pub mod persist;
pub mod registry;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use connection::{Connection, Socket};
use persist::{Persisted, Persister, ReplyTo, SendRequest};
use registry::{Kind, Outbound, Registry};

use crate::config::{Config, Faults, WsConfig};
use crate::db::messages::NewMessage;
use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::ids::UserId;
use crate::metrics::HubMetrics;
use crate::protocol::{Encoded, ServerFrame};
use crate::throttle::Throttles;

pub struct Hub {
    pub registry: Arc<Registry>,
    pub metrics: HubMetrics,
    pub persister: Persister,
    pub db: Db,
    pub ws: WsConfig,
    pub message_max_bytes: usize,
    pub faults: Faults,
    pub throttles: Arc<Throttles>,
    /// Cancelled at shutdown: connections stop reading, finish their sends, close with 1001.
    pub shutdown: CancellationToken,
    pub connections: TaskTracker,
    /// Database reads for syncs, gap repairs and catch-ups: half the pool guard's permits, so a
    /// reconnect storm leaves the other half to sends.
    pub catchups: Semaphore,
}

impl Hub {
    pub fn new(db: Db, config: &Config, throttles: Arc<Throttles>) -> Arc<Hub> {
        let registry = Arc::new(Registry::default());
        let metrics = HubMetrics::new();
        let persister = Persister::start(
            db.clone(),
            registry.clone(),
            config.ws.persist_workers,
            config.ws.persist_batch,
            config.ws.persist_queue,
            &metrics,
            &config.faults,
        );
        Arc::new(Hub {
            registry,
            persister,
            metrics,
            db,
            ws: config.ws.clone(),
            message_max_bytes: config.message_max_bytes,
            faults: config.faults.clone(),
            throttles,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            catchups: Semaphore::new((config.db_permits as usize / 2).max(1)),
        })
    }

    /// Stores a message sent over HTTP through the same path as a socket's, fan-out included.
    pub async fn send(&self, message: NewMessage) -> AppResult<Persisted> {
        let (tx, rx) = oneshot::channel();
        let request = SendRequest {
            message,
            reply: ReplyTo::Http(tx),
        };
        if self.persister.submit(request).is_err() {
            return Err(AppError::Overloaded);
        }
        rx.await.map_err(|_| AppError::Unavailable)?
    }

    /// Queues an event (typing, read marker, new chat, friend request) for every connection of
    /// `users` but `except`.
    pub fn notify(&self, users: &[UserId], except: Option<u64>, frame: ServerFrame) {
        let out = Outbound {
            kind: Kind::Event,
            frame: Arc::new(Encoded::new(frame)),
        };
        self.registry.deliver(users, except, &out);
    }

    /// Tells every connection to finish its in-flight sends and close with 1001, and waits for
    /// them at most `grace`.
    pub async fn close_connections(&self, grace: Duration) {
        self.shutdown.cancel();
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.registry.open_connections(),
                "sockets still open after the grace period"
            );
        }
    }
}

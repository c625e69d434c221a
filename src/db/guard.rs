//! The pool guard: every query from user traffic first takes a permit here. There are fewer
//! permits than pool connections, so readiness checks always find a connection, and a request
//! that cannot get a permit in time is answered `overloaded` instead of queueing without end.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::Postgres;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::{AppError, AppResult};
use crate::metrics as m;

/// What a guarded connection is for: the `operation` label of its timing. A fixed, short list.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Accounts,
    Friends,
    Chats,
    History,
    Persist,
    Sync,
    Read,
    Typing,
    Bus,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Accounts => "accounts",
            Op::Friends => "friends",
            Op::Chats => "chats",
            Op::History => "history",
            Op::Persist => "persist",
            Op::Sync => "sync",
            Op::Read => "read",
            Op::Typing => "typing",
            Op::Bus => "bus",
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    permits: Arc<Semaphore>,
    permit_timeout: Duration,
}

/// A pooled connection together with the permit that allowed it; both return on drop.
pub struct DbConn {
    conn: PoolConnection<Postgres>,
    _permit: OwnedSemaphorePermit,
    op: Op,
    /// When the operation in progress began, if one is.
    since: Option<Instant>,
}

impl DbConn {
    /// Ends the operation in progress (recording its duration) on a connection its holder
    /// keeps for the next one.
    pub fn finish_operation(&mut self) {
        if let Some(since) = self.since.take() {
            metrics::histogram!(m::DB_OPERATION, "operation" => self.op.as_str())
                .record(since.elapsed());
        }
    }

    /// Begins another operation on a kept connection.
    pub fn start_operation(&mut self) {
        self.since = Some(Instant::now());
    }
}

impl Drop for DbConn {
    fn drop(&mut self) {
        self.finish_operation();
    }
}

impl Db {
    pub fn new(pool: PgPool, permits: u32, permit_timeout: Duration) -> Self {
        Self {
            pool,
            permits: Arc::new(Semaphore::new(permits as usize)),
            permit_timeout,
        }
    }

    /// Waits at most the permit timeout for a permit, then takes a connection.
    pub async fn conn(&self, op: Op) -> AppResult<DbConn> {
        let waited = Instant::now();
        let permit =
            tokio::time::timeout(self.permit_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    metrics::counter!(m::DB_PERMIT_TIMEOUTS).increment(1);
                    AppError::Overloaded
                })?
                .map_err(|_| AppError::Unavailable)?;
        metrics::histogram!(m::DB_PERMIT_WAIT).record(waited.elapsed());
        let acquiring = Instant::now();
        let conn = self.pool.acquire().await?;
        metrics::histogram!(m::DB_POOL_ACQUIRE).record(acquiring.elapsed());
        Ok(DbConn {
            conn,
            _permit: permit,
            op,
            since: Some(Instant::now()),
        })
    }

    /// The raw pool, outside the guard: for readiness checks and shutdown only.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn permits_available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Sets the pool and permit gauges; called on a short interval and at each scrape.
    pub fn sample(&self, permits_max: u32) {
        let (size, idle) = (self.pool.size() as f64, self.pool.num_idle() as f64);
        metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
        metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "in_use").set(size - idle);
        metrics::gauge!(m::DB_POOL_MAX).set(self.pool.options().get_max_connections() as f64);
        let available = self.permits.available_permits() as f64;
        metrics::gauge!(m::DB_PERMITS, "state" => "available").set(available);
        metrics::gauge!(m::DB_PERMITS, "state" => "in_use").set(f64::from(permits_max) - available);
        metrics::gauge!(m::DB_PERMITS_MAX).set(f64::from(permits_max));
    }
}

impl Deref for DbConn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for DbConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

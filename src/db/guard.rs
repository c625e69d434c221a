//! The pool guard: every query from user traffic first takes a permit here. There are fewer
//! permits than pool connections, so readiness checks always find a connection, and a request
//! that cannot get a permit in time is answered `overloaded` instead of queueing without end.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, Transaction};
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
    Presence,
    Attachments,
    Webhooks,
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
            Op::Presence => "presence",
            Op::Attachments => "attachments",
            Op::Webhooks => "webhooks",
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    permits: Arc<Semaphore>,
    permit_timeout: Duration,
    /// Behind a pooler in transaction mode: the statement that opens each unit of work's
    /// transaction (and sets its statement timeout).
    pinned: Option<Arc<str>>,
    /// A read replica with its own permits, for history and catch-up reads.
    replica: Option<Replica>,
}

#[derive(Clone)]
struct Replica {
    pool: PgPool,
    permits: Arc<Semaphore>,
    /// Until when reads skip a replica that failed, so that each does not wait for it.
    resting_until: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// How long reads skip a replica after it failed one.
const REPLICA_REST: Duration = Duration::from_secs(5);

/// How a guarded connection holds its server session.
enum Held {
    /// A connection of its own: each statement commits by itself unless it opens a transaction.
    Direct(PoolConnection<Postgres>),
    /// Behind a pooler in transaction mode the session is ours only inside a transaction (a
    /// statement's parse and execution may otherwise reach two servers), so the whole unit of
    /// work is one, committed by [`DbConn::done`] and rolled back if dropped.
    Pinned(Transaction<'static, Postgres>),
    /// After `done`.
    Released,
}

/// A pooled connection together with the permit that allowed it; both return on drop.
/// Whatever the connection wrote counts once [`DbConn::done`] has returned: behind a pooler in
/// transaction mode, a connection dropped without it rolls its writes back.
pub struct DbConn {
    held: Held,
    /// Behind a pooler: where and how [`DbConn::commit`] opens the next transaction.
    reopen: Option<(PgPool, Arc<str>)>,
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

    /// Ends the unit of work: commits its transaction behind a pooler; nothing to do on a
    /// direct connection, whose statements have committed already.
    pub async fn done(mut self) -> AppResult<()> {
        if let Held::Pinned(tx) = std::mem::replace(&mut self.held, Held::Released) {
            tx.commit().await?;
        }
        Ok(())
    }

    /// Commits what the unit of work wrote so far and goes on with it: call it before others
    /// are told of a write (on a direct connection, a no-op). Behind a pooler, the next
    /// statements run in a new transaction.
    pub async fn commit(&mut self) -> AppResult<()> {
        let Some((pool, begin)) = &self.reopen else {
            return Ok(());
        };
        if let Held::Pinned(tx) = std::mem::replace(&mut self.held, Held::Released) {
            tx.commit().await?;
        }
        self.held = Held::Pinned(pool.begin_with(begin.to_string()).await?);
        Ok(())
    }

    /// Whether the connection may be kept between units of work: not behind a pooler, where
    /// it would hold a server in an open transaction.
    pub fn keepable(&self) -> bool {
        matches!(self.held, Held::Direct(_))
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
            pinned: None,
            replica: None,
        }
    }

    /// Behind a pooler in transaction mode: each unit of work is one transaction, with the
    /// statement timeout set in it. The statements a unit of work prepares stay on the server
    /// session after it (the client names them afresh on its own connection), so each unit
    /// first drops those a previous client left there: no name can meet another's statement.
    pub fn pinned(mut self, statement_timeout_ms: u64) -> Self {
        self.pinned = Some(
            format!("BEGIN; DEALLOCATE ALL; SET LOCAL statement_timeout = {statement_timeout_ms}")
                .into(),
        );
        self
    }

    /// With a read replica: `permits` connections of `pool` for history and catch-up reads.
    pub fn with_replica(mut self, pool: PgPool, permits: u32) -> Self {
        self.replica = Some(Replica {
            pool,
            permits: Arc::new(Semaphore::new(permits as usize)),
            resting_until: Arc::default(),
        });
        self
    }

    /// Waits at most the permit timeout for a permit, then takes a connection.
    pub async fn conn(&self, op: Op) -> AppResult<DbConn> {
        self.guarded(&self.pool, &self.permits, op).await
    }

    /// A connection to the read replica, if there is one. The caller checks that what it read
    /// reaches the seq it needs, and reads the rest from the primary.
    /// None too while a replica that failed rests.
    pub async fn replica_conn(&self, op: Op) -> Option<AppResult<DbConn>> {
        let replica = self.replica.as_ref()?;
        {
            let mut resting = replica
                .resting_until
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match *resting {
                Some(until) if Instant::now() < until => return None,
                Some(_) => *resting = None,
                None => {}
            }
        }
        Some(self.guarded(&replica.pool, &replica.permits, op).await)
    }

    /// Notes that the replica failed a read: reads go to the primary for a while.
    pub fn replica_failed(&self, error: &AppError) {
        if let Some(replica) = &self.replica {
            tracing::warn!(%error, "the read replica failed a read; reading from the primary for a while");
            *replica
                .resting_until
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + REPLICA_REST);
        }
    }

    /// Whether history and catch-up reads may go to a replica.
    pub fn has_replica(&self) -> bool {
        self.replica.is_some()
    }

    async fn guarded(&self, pool: &PgPool, permits: &Arc<Semaphore>, op: Op) -> AppResult<DbConn> {
        let waited = Instant::now();
        let permit = tokio::time::timeout(self.permit_timeout, permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                metrics::counter!(m::DB_PERMIT_TIMEOUTS).increment(1);
                AppError::Overloaded
            })?
            .map_err(|_| AppError::Unavailable)?;
        metrics::histogram!(m::DB_PERMIT_WAIT).record(waited.elapsed());
        let acquiring = Instant::now();
        let held = match &self.pinned {
            None => Held::Direct(pool.acquire().await?),
            Some(begin) => Held::Pinned(pool.begin_with(begin.to_string()).await?),
        };
        metrics::histogram!(m::DB_POOL_ACQUIRE).record(acquiring.elapsed());
        Ok(DbConn {
            held,
            reopen: self.pinned.clone().map(|begin| (pool.clone(), begin)),
            _permit: permit,
            op,
            since: Some(Instant::now()),
        })
    }

    /// The raw pool, outside the guard: for readiness checks and shutdown only.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether units of work run behind a pooler in transaction mode.
    pub fn is_pinned(&self) -> bool {
        self.pinned.is_some()
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
        match &self.held {
            Held::Direct(conn) => conn,
            Held::Pinned(tx) => tx,
            Held::Released => unreachable!("a connection used after done()"),
        }
    }
}

impl DerefMut for DbConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match &mut self.held {
            Held::Direct(conn) => conn,
            Held::Pinned(tx) => tx,
            Held::Released => unreachable!("a connection used after done()"),
        }
    }
}

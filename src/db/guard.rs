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

use crate::error::{AppError, AppResult};

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
    pub async fn conn(&self) -> AppResult<DbConn> {
        let permit =
            tokio::time::timeout(self.permit_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| AppError::Overloaded)?
                .map_err(|_| AppError::Unavailable)?;
        let conn = self.pool.acquire().await?;
        Ok(DbConn {
            conn,
            _permit: permit,
        })
    }

    /// The raw pool, outside the guard: for readiness checks and shutdown only.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn permits_available(&self) -> usize {
        self.permits.available_permits()
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

//! The bus over PostgreSQL's `LISTEN`/`NOTIFY`, on the database the nodes already share: no
//! other service to run. Announcements of commits and events are sent through the pool guard
//! like any query, right after their commits (not inside them: see `bus::publisher`). Each node
//! listens on a connection of its own, outside the guard.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::{BusError, Channel, Listening, Notice, Transport};
use crate::db::{Db, Op};

pub struct Postgres {
    db: Db,
    /// The listener's own connection, opened when it listens.
    listen_pool: PgPool,
    /// Where the listener connects past a pooler in transaction mode; without one it follows
    /// the pool.
    listen_at: Option<PgConnectOptions>,
}

impl Postgres {
    pub fn new(db: Db, listen_at: Option<PgConnectOptions>) -> Self {
        let options = listen_at
            .clone()
            .unwrap_or_else(|| (*db.pool().connect_options()).clone());
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Self {
            db,
            listen_pool,
            listen_at,
        }
    }
}

impl Transport for Postgres {
    async fn send(&self, channel: Channel, payloads: Vec<String>) -> Result<(), BusError> {
        let mut conn = self.db.conn(Op::Bus).await?;
        notify(&mut conn, channel, &payloads).await?;
        conn.done().await?;
        Ok(())
    }

    async fn listen(&self) -> Result<Listening, BusError> {
        // The listener follows the pool to whichever host it is on now (after a failover).
        if self.listen_at.is_none() {
            self.listen_pool
                .set_connect_options((*self.db.pool().connect_options()).clone());
        }
        let mut listener = PgListener::connect_with(&self.listen_pool).await?;
        listener.ignore_pool_close_event(true);
        // A lost connection ends the notices; the caller opens it again and checks.
        listener.eager_reconnect(false);
        listener
            .listen_all([Channel::Messages.name(), Channel::Events.name()])
            .await?;
        Ok(Listening::start(|tx| async move {
            while let Ok(Some(n)) = listener.try_recv().await {
                let Some(channel) = Channel::named(n.channel()) else {
                    continue;
                };
                let notice = Notice {
                    channel,
                    payload: n.payload().to_owned(),
                };
                if tx.send(notice).await.is_err() {
                    return;
                }
            }
        }))
    }
}

/// Sends `payloads` on `channel` with one statement, on `conn` (inside its transaction, if any).
pub async fn notify(
    conn: &mut sqlx::PgConnection,
    channel: Channel,
    payloads: &[String],
) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(channel.name())
        .bind(payloads)
        .execute(conn)
        .await?;
    Ok(())
}

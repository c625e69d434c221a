//! The bus over PostgreSQL's `LISTEN`/`NOTIFY`, on the database the nodes already share: no
//! other service to run. Each node sends on one connection of its own and listens on another,
//! both outside the pool guard. Announcements of commits and events go right after their
//! commits (not inside them: see `bus::publisher`), whatever has gathered in one statement.
//!
//! The sending connection commits without waiting for its WAL to be flushed
//! (`synchronous_commit = off`): a notification is a hint about rows already committed and
//! flushed, or an event that is best effort anyway, so a crash may lose one, as a full queue may,
//! and the position checks find what it named. Waiting would cost a flush per announcement, taken
//! one at a time under PostgreSQL's notify lock, on the path of every delivery that crosses.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::{BusError, Channel, Listening, Notice, Transport};
use crate::db::Db;

pub struct Postgres {
    db: Db,
    /// The listener's own connection, opened when it listens.
    listen_pool: PgPool,
    /// The sending connection, opened at the first send.
    send_pool: PgPool,
    /// Where the listener connects past a pooler in transaction mode; without one it follows
    /// the pool.
    listen_at: Option<PgConnectOptions>,
}

impl Postgres {
    pub fn new(db: Db, listen_at: Option<PgConnectOptions>) -> Self {
        let options = listen_at
            .clone()
            .unwrap_or_else(|| (*db.pool().connect_options()).clone());
        let one = || {
            PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
        };
        let send_pool = one().connect_lazy_with(unflushed(options.clone()));
        let listen_pool = one().connect_lazy_with(options);
        Self {
            db,
            listen_pool,
            send_pool,
            listen_at,
        }
    }

    /// Points both connections at whichever host the pool is on now (after a failover); with a
    /// direct URL beside a pooler they stay on it.
    fn follow_pool(&self) {
        if self.listen_at.is_none() {
            let options = (*self.db.pool().connect_options()).clone();
            self.send_pool
                .set_connect_options(unflushed(options.clone()));
            self.listen_pool.set_connect_options(options);
        }
    }
}

fn unflushed(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("synchronous_commit", "off")])
}

impl Transport for Postgres {
    async fn send(&self, payloads: Vec<(Channel, String)>) -> Result<(), BusError> {
        let (channels, payloads): (Vec<&str>, Vec<String>) =
            payloads.into_iter().map(|(c, p)| (c.name(), p)).unzip();
        let sent =
            sqlx::query("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)")
                .bind(channels)
                .bind(payloads)
                .execute(&self.send_pool)
                .await;
        if sent.is_err() {
            self.follow_pool();
        }
        sent?;
        Ok(())
    }

    async fn listen(&self) -> Result<Listening, BusError> {
        self.follow_pool();
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

//! The bus over PostgreSQL's `LISTEN`/`NOTIFY`, on the database the nodes already share: no
//! other service to run. Each node sends on one connection of its own and listens on another,
//! both outside the pool guard. Announcements of commits and events go right after their
//! commits (not inside them: see `bus::publisher`), whatever has gathered in one statement.
//!
//! The sending connection is kept by the one task that sends, outside any pool: a pool would
//! test it with a round trip when it is taken and again when it is given back, and give it back
//! from a task of its own, tripling the cost of every announcement. It is opened at the first
//! send and after any failure, on whichever host the pool is on then.
//!
//! The sending connection commits without waiting for its WAL to be flushed
//! (`synchronous_commit = off`): a notification is a hint about rows already committed and
//! flushed, or an event that is best effort anyway, so a crash may lose one, as a full queue may,
//! and the position checks find what it named. Waiting would cost a flush per announcement, taken
//! one at a time under PostgreSQL's notify lock, on the path of every delivery that crosses.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::Connection;

use super::{BusError, Channel, Dest, Inbox, Listening, Notice, Transport};
use crate::db::Db;

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
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(SEND_TIMEOUT)
            .connect_lazy_with(Self::options_of(&db, &listen_at));
        Self {
            db,
            listen_pool,
            listen_at,
        }
    }

    /// Where both connections go: the direct URL beside a pooler, or else whichever host the
    /// pool is on now (after a failover).
    fn options_of(db: &Db, listen_at: &Option<PgConnectOptions>) -> PgConnectOptions {
        listen_at
            .clone()
            .unwrap_or_else(|| (*db.pool().connect_options()).clone())
    }

    /// Points the listener's connection at whichever host the pool is on now.
    fn follow_pool(&self) {
        if self.listen_at.is_none() {
            self.listen_pool
                .set_connect_options(Self::options_of(&self.db, &self.listen_at));
        }
    }

    /// A new sending connection, which does not wait for its commits' flushes.
    async fn connect_sender(&self) -> Result<PgConnection, BusError> {
        let options =
            Self::options_of(&self.db, &self.listen_at).options([("synchronous_commit", "off")]);
        match tokio::time::timeout(SEND_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(connected) => Ok(connected?),
            Err(_) => Err(BusError::Timeout(SEND_TIMEOUT)),
        }
    }
}

/// The longest a connection or a send may take; then the sending connection is opened again.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

impl Transport for Postgres {
    /// The sending connection; None until the first send and after a failure.
    type Link = Option<PgConnection>;

    async fn send(
        &self,
        link: &mut Option<PgConnection>,
        payloads: Vec<(Dest, String)>,
    ) -> Result<(), BusError> {
        let conn = match link {
            Some(conn) => conn,
            None => link.insert(self.connect_sender().await?),
        };
        let (channels, payloads): (Vec<String>, Vec<String>) = payloads
            .into_iter()
            .map(|(dest, p)| match dest {
                Dest::All(c) => (c.name().to_owned(), p),
                Dest::Inbox(inbox) => (inbox.channel(), p),
            })
            .unzip();
        let query =
            sqlx::query("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)")
                .bind(channels)
                .bind(payloads);
        let sent = tokio::time::timeout(SEND_TIMEOUT, query.execute(&mut *conn)).await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                *link = None;
                Err(e.into())
            }
            Err(_) => {
                *link = None;
                Err(BusError::Timeout(SEND_TIMEOUT))
            }
        }
    }

    async fn listen(&self, inbox: &Inbox) -> Result<Listening, BusError> {
        self.follow_pool();
        let mut listener = PgListener::connect_with(&self.listen_pool).await?;
        listener.ignore_pool_close_event(true);
        // A lost connection ends the notices; the caller opens it again and checks.
        listener.eager_reconnect(false);
        let inbox = inbox.channel();
        listener
            .listen_all([Channel::Messages.name(), Channel::Events.name(), &inbox])
            .await?;
        Ok(Listening::start(|tx| async move {
            while let Ok(Some(n)) = listener.try_recv().await {
                let channel = match Channel::named(n.channel()) {
                    Some(channel) => channel,
                    None if n.channel() == inbox => Channel::Events,
                    None => continue,
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

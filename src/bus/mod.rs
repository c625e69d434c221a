//! The bus between nodes that share one PostgreSQL: a hint, never the record. Each group commit
//! names what it stored (chat and seq range per chat); other events (read markers, typing, new
//! chats, friend requests, removals) travel on a second channel. Every node listens (see
//! [`listener`]), reads the committed rows it was told of and delivers them through the sockets'
//! cursors; whatever a node misses while not listening is found by a position check against
//! `conversations.last_seq`, so nothing is lost when a hint is.
//!
//! Two transports carry it behind [`Transport`]: PostgreSQL's `LISTEN`/`NOTIFY` ([`postgres`])
//! and core NATS subjects ([`nats`]). Either way a commit is announced right after it, by the
//! [`Publisher`], and only while another node is around.

pub mod listener;
pub mod nats;
mod payload;
pub mod postgres;
mod publisher;
mod seal;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::BusKind;
use crate::db::Db;
use crate::hub::Hub;

pub use payload::{decode_ranges, encode_ranges, ranges_of, Event, Range, Refused, PAYLOAD_MAX};
pub use publisher::{Peers, Publisher};
pub use seal::Seal;

/// A bus that sends, and listens once it is given the hub to deliver to.
pub struct Bus {
    publisher: Publisher,
    listen: Box<dyn FnOnce(Arc<Hub>) + Send>,
}

impl Bus {
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Starts listening, delivering to `hub`, until the server stops.
    pub fn listen(self, hub: Arc<Hub>) {
        (self.listen)(hub)
    }
}

/// The bus of `kind` for node `node`, sending until `stop`; None when it is off. Fails when
/// a NATS server does not answer.
pub async fn connect(
    kind: &BusKind,
    db: &Db,
    listen_at: Option<PgConnectOptions>,
    node: &str,
    seal: Seal,
    linger: Duration,
    stop: &CancellationToken,
) -> Result<Option<Bus>, BusError> {
    Ok(match kind {
        BusKind::Off => None,
        BusKind::Postgres => Some(started(
            postgres::Postgres::new(db.clone(), listen_at),
            node,
            seal,
            linger,
            stop,
        )),
        BusKind::Nats { url, prefix } => Some(started(
            nats::Nats::connect(url, prefix, node).await?,
            node,
            seal,
            linger,
            stop,
        )),
    })
}

fn started<T: Transport>(
    transport: T,
    node: &str,
    seal: Seal,
    linger: Duration,
    stop: &CancellationToken,
) -> Bus {
    let transport = Arc::new(transport);
    let publisher = Publisher::start(transport.clone(), node, seal, linger, stop.clone());
    let (sender, stop) = (publisher.clone(), stop.clone());
    Bus {
        publisher,
        listen: Box::new(move |hub| {
            tokio::spawn(listener::run(transport, hub, sender, stop));
        }),
    }
}

/// The two streams on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// What group commits stored.
    Messages,
    /// Other events, and each node's heartbeats.
    Events,
}

impl Channel {
    /// Its name as a PostgreSQL channel.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Messages => "xfchat_messages",
            Channel::Events => "xfchat_events",
        }
    }

    fn named(name: &str) -> Option<Channel> {
        [Channel::Messages, Channel::Events]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

/// Where a payload goes: a channel every node hears, or the inbox of one node, which carries
/// what the events channel carries, for that node alone. A node does not hear its own packed
/// events on the inboxes, so sending costs it no wake-up to read them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    All(Channel),
    Inbox(Inbox),
}

/// A node's inbox: a short tag of its id, safe in a channel's or a subject's name whatever
/// characters the id holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Inbox(Arc<str>);

impl Inbox {
    pub fn of(node: &str) -> Inbox {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(node.as_bytes());
        Inbox(hex::encode(&digest[..8]).into())
    }

    /// Its name as a PostgreSQL channel.
    pub fn channel(&self) -> String {
        format!("{}_{}", Channel::Events.name(), self.0)
    }

    pub fn tag(&self) -> &str {
        &self.0
    }
}

/// One payload heard on the bus.
#[derive(Debug)]
pub struct Notice {
    pub channel: Channel,
    pub payload: String,
}

/// A failure of the bus; logged and counted, never shown to a client.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("database: {0}")]
    Database(#[from] crate::error::AppError),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("postgres: no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("nats: {0}")]
    Nats(String),
}

/// A way for nodes to hear each other.
pub trait Transport: Send + Sync + 'static {
    /// What the one sending task keeps between sends (a connection of its own, say).
    type Link: Default + Send + 'static;

    /// Sends each payload where it goes, in order, in one go, over `link`.
    fn send(
        &self,
        link: &mut Self::Link,
        payloads: Vec<(Dest, String)>,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Starts listening on both channels and on `inbox` (heard as the events channel) on a
    /// connection of its own. The notices end when that connection is lost or a notice was
    /// dropped; then the caller listens again and checks.
    fn listen(&self, inbox: &Inbox) -> impl Future<Output = Result<Listening, BusError>> + Send;
}

/// Notices as they are heard, from a reader task that stops when this is dropped.
pub struct Listening {
    pub notices: mpsc::Receiver<Notice>,
    reader: JoinHandle<()>,
}

impl Listening {
    /// Notices read ahead of delivery.
    const QUEUE: usize = 1024;

    /// A reader `read` that sends what it hears on the channel it is given.
    fn start<F>(read: impl FnOnce(mpsc::Sender<Notice>) -> F) -> Listening
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, notices) = mpsc::channel(Self::QUEUE);
        Listening {
            notices,
            reader: tokio::spawn(read(tx)),
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

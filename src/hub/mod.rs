//! The realtime hub: the registry of online connections, the connection tasks, and the persist
//! path that commits messages before anyone hears of them. The rest of the server reaches it
//! through a small door: admit and serve a socket, send, notify, revoke, close.

mod backlog;
mod connection;
mod dispatch;
pub mod handshake;
pub mod persist;
mod presence;
mod registry;
mod remote;
mod slots;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::net::IpAddr;

use hyper::upgrade::OnUpgrade;
use uuid::Uuid;

use backlog::Caps as QueueCaps;
use connection::Connection;
pub use connection::Socket;
pub use persist::Persisted;
use persist::{Persister, ReplyTo, SendRequest};
pub use registry::ConnId;
use registry::{Caps, ConnInbox, Kind, Outbound, Refused, Registry};
use remote::Positions;
pub use remote::{Scope, Suspects};

use crate::auth::Session;
use crate::bus::Publisher;
use crate::config::{Config, Faults, WsConfig};
use crate::db::entries::{self, Amend, Amended};
use crate::db::messages::{self, NewMessage};
use crate::db::{service, Db, Op};
use crate::error::{AppError, AppResult};
use crate::ids::{ChatId, UserId};
use crate::metrics::HubMetrics;
use crate::protocol::{Codec, Encoded, EntryKind, ServerFrame};
use crate::throttle::Throttles;

pub struct Hub {
    registry: Arc<Registry>,
    metrics: HubMetrics,
    persister: Persister,
    db: Db,
    ws: WsConfig,
    message_max_bytes: usize,
    /// The webhook events commits write to the outbox; None without webhooks.
    hooks: Option<Arc<str>>,
    faults: Faults,
    throttles: Arc<Throttles>,
    /// A child of the server's shutdown token: at shutdown, connections stop reading, finish
    /// their sends and close with 1001.
    shutdown: CancellationToken,
    connections: TaskTracker,
    /// Database reads for syncs, gap repairs and catch-ups: half the pool guard's permits, so a
    /// reconnect storm leaves the other half to sends.
    catchups: Arc<Semaphore>,
    /// Per chat, the last seq delivered here, for the bus's position check.
    positions: Arc<Positions>,
    /// Events to other nodes; None without a bus.
    bus: Option<Publisher>,
    /// The epoch of the history this node serves (`db::history`).
    epoch: std::sync::RwLock<Uuid>,
}

/// A socket the hub has room for, waiting for its upgrade to complete.
pub struct Admitted {
    session: Session,
    codec: Codec,
    inbox: ConnInbox,
}

/// Counts an upgrade refused before the handshake, by reason.
pub fn refused(reason: &'static str) {
    metrics::counter!(crate::metrics::WS_REFUSED, "reason" => reason).increment(1);
}

impl Hub {
    /// A hub; with `bus`, its commits are announced to the other nodes and so are its events.
    pub fn new(
        db: Db,
        config: &Config,
        throttles: Arc<Throttles>,
        bus: Option<Publisher>,
        shutdown: &CancellationToken,
    ) -> Arc<Hub> {
        let registry = Arc::new(Registry::default());
        let metrics = HubMetrics::new();
        let positions = Arc::new(Positions::default());
        let hooks: Option<Arc<str>> = config
            .integrations
            .webhook
            .as_ref()
            .map(|w| w.events.as_str().into());
        let persister = Persister::start(
            db.clone(),
            registry.clone(),
            positions.clone(),
            bus.clone(),
            config,
            &metrics,
        );
        Arc::new(Hub {
            registry,
            persister,
            metrics,
            db,
            ws: config.ws.clone(),
            message_max_bytes: config.message_max_bytes,
            hooks,
            faults: config.faults.clone(),
            throttles,
            shutdown: shutdown.child_token(),
            connections: TaskTracker::new(),
            catchups: Arc::new(Semaphore::new((config.db_permits as usize / 2).max(1))),
            positions,
            bus,
            epoch: std::sync::RwLock::new(Uuid::nil()),
        })
    }

    /// Registers a socket of `session` from `ip` within the server's, the user's and the
    /// address's caps; it receives frames from now on.
    pub fn admit(&self, session: Session, ip: IpAddr, codec: Codec) -> AppResult<Admitted> {
        if self.shutdown.is_cancelled() {
            return Err(AppError::Unavailable);
        }
        let queue = QueueCaps {
            frames: self.ws.queue_frames,
            bytes: self.ws.queue_bytes,
        };
        let caps = Caps {
            total: self.ws.max_connections,
            per_user: self.ws.max_per_user,
            per_ip: self.ws.max_per_ip,
        };
        let inbox = self
            .registry
            .register(session, ip, codec, queue, caps)
            .map_err(|why| match why {
                Refused::Server => {
                    refused("server_full");
                    AppError::Overloaded
                }
                Refused::Address => {
                    refused("address_full");
                    AppError::TooManyConnections(format!(
                        "at most {} open sockets per client address",
                        self.ws.max_per_ip
                    ))
                }
                Refused::User => {
                    refused("user_full");
                    AppError::TooManyConnections(format!(
                        "at most {} open sockets per user",
                        self.ws.max_per_user
                    ))
                }
            })?;
        Ok(Admitted {
            session,
            codec,
            inbox,
        })
    }

    /// Serves an admitted socket once hyper hands over the upgraded connection, in a task of
    /// its own that shutdown waits for.
    pub fn serve(self: &Arc<Self>, admitted: Admitted, on_upgrade: OnUpgrade) {
        let hub = self.clone();
        self.connections.spawn(async move {
            let Admitted {
                session,
                codec,
                inbox,
            } = admitted;
            match handshake::socket(on_upgrade, hub.ws.max_frame_bytes).await {
                Ok(socket) => {
                    // Boxed, so the task holds the connection once (an async fn taking
                    // `self` by value keeps two copies of it in its future).
                    Box::new(Connection::new(hub, session, codec, socket, inbox))
                        .run()
                        .await
                }
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    hub.registry.unregister(session.user, inbox.ip, inbox.id);
                }
            }
        });
    }

    /// A slot among the sockets' database reads, waited for in turn.
    async fn catchup_slot(&self) -> AppResult<tokio::sync::OwnedSemaphorePermit> {
        self.catchups
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AppError::Unavailable)
    }

    /// The epoch of the history, as every socket's `hello` names it.
    pub fn epoch(&self) -> Uuid {
        *self.epoch.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the epoch; when it changed from one already served, every socket closes with 4005
    /// so that its client reconnects and resumes against the new history.
    pub fn set_epoch(&self, epoch: Uuid) {
        let before = std::mem::replace(
            &mut *self.epoch.write().unwrap_or_else(|e| e.into_inner()),
            epoch,
        );
        if !before.is_nil() && before != epoch {
            tracing::warn!(%epoch, "the history was rewound: closing every socket");
            self.registry.cut_off_all(registry::Kick::Rewound);
        }
    }

    /// Closes every socket of `user` opened with token or session `id` (4002).
    pub fn revoke(&self, user: UserId, id: Uuid) {
        self.registry.revoke(user, id);
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

    /// Queues an event (typing, read marker, new chat, friend request, removal) for every
    /// connection of `users` but `except`, on this node and the others.
    pub fn notify(&self, users: &[UserId], except: Option<ConnId>, frame: ServerFrame) {
        if let Some(bus) = &self.bus {
            bus.publish(users, &frame);
        }
        let out = Outbound {
            kind: Kind::Event,
            frame: Arc::new(Encoded::new(frame)),
        };
        self.registry.deliver(users, except, &out);
    }

    /// Stores an edit, delete or reaction (HTTP and sockets alike) after checking its text,
    /// then delivers its entry to the chat's members, on this node and the others, like a
    /// committed message. Answers the entry; None when there was nothing to do.
    pub async fn amend(&self, amend: Amend) -> AppResult<Option<crate::protocol::Message>> {
        match amend.kind {
            EntryKind::Edit => messages::check_body(&amend.body, self.message_max_bytes)?,
            EntryKind::React | EntryKind::Unreact => entries::check_emoji(&amend.body)?,
            EntryKind::Delete | EntryKind::Message => {}
        }
        let done = {
            let mut conn = self.db.conn(Op::Chats).await?;
            let done = entries::amend(&mut conn, amend).await?;
            conn.done().await?;
            done
        };
        let Amended::New(entry, members) = done else {
            return Ok(None);
        };
        if let Some(bus) = &self.bus {
            bus.announce([(&*entry, members.as_slice())]);
        }
        self.deliver_message(&members, (*entry).clone());
        Ok(Some(*entry))
    }

    /// Stores a message from the system (the service key's) in `chat` and delivers it like
    /// any message: committed first, then to the members' sockets here and on other nodes.
    pub async fn post_system(
        &self,
        chat: ChatId,
        client_msg_id: Uuid,
        body: &str,
    ) -> AppResult<Persisted> {
        messages::check_body(body, self.message_max_bytes)?;
        let posted = {
            let mut conn = self.db.conn(Op::Chats).await?;
            let posted =
                service::post_system(&mut conn, chat, client_msg_id, body, self.hooks.as_deref())
                    .await?;
            conn.done().await?;
            posted
        };
        if !posted.new {
            return Ok(Persisted::Replay(posted.message));
        }
        if let Some(bus) = &self.bus {
            bus.announce([(&posted.message, posted.members.as_slice())]);
        }
        self.deliver_message(&posted.members, posted.message.clone());
        Ok(Persisted::New(posted.message))
    }

    /// Tells every connection to finish its in-flight sends and close with 1001 (the server's
    /// shutdown has done so already), and waits for them at most `grace`.
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

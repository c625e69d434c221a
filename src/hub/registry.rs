//! Online connections, keyed by user. Delivery only ever `try_send`s into a connection's bounded
//! queue while holding a map guard: nothing here awaits, so no guard is held across `.await`.
//! A connection whose queue is full falls behind (see [`Backlog`]) and catches up from the
//! database; it is not cut off.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use uuid::Uuid;

pub use super::backlog::Caps as QueueCaps;
use super::backlog::{Backlog, CONTROL_HEADROOM};
use crate::auth::Session;
use crate::ids::{ChatId, UserId};
use crate::metrics as m;
use crate::protocol::{Codec, Encoded};

/// What a frame in a connection's queue is, so the connection can keep its promises.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A chat message: delivered once per connection, in seq order.
    Message { chat: ChatId, seq: i64 },
    /// The answer (ack or error) to one of this connection's sends; `since` is when the send
    /// frame arrived, for the ack latency; `acked` the chat and seq an ack stands for, since
    /// an ack delivers its message to the sending socket.
    Reply {
        since: Option<tokio::time::Instant>,
        acked: Option<(ChatId, i64)>,
    },
    /// Anything else: typing, read markers, new chats and friend requests.
    Event,
}

#[derive(Debug, Clone)]
pub struct Outbound {
    pub kind: Kind,
    pub frame: Arc<Encoded>,
}

/// One socket, among all of this server's (not stable across restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

/// Why the hub cut a connection off; the connection closes with the matching code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kick {
    /// Not cut off (or gone for its own reasons).
    None = 0,
    /// The token it authenticated with was revoked (logout).
    Revoked = 2,
    /// Its acks and events filled the queue's headroom: it has read nothing for a long time.
    Stalled = 3,
    /// The history was rewound: its client reconnects and learns the new epoch.
    Rewound = 4,
}

/// The reason a connection was cut off, shared by the hub's and the connection's sides.
#[derive(Default)]
pub struct KickReason(AtomicU8);

impl KickReason {
    pub fn get(&self) -> Kick {
        match self.0.load(Ordering::Relaxed) {
            2 => Kick::Revoked,
            3 => Kick::Stalled,
            4 => Kick::Rewound,
            _ => Kick::None,
        }
    }
}

/// The hub's side of one connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    jti: Uuid,
    sid: Uuid,
    codec: Codec,
    queue: QueueCaps,
    tx: mpsc::Sender<Outbound>,
    backlog: Arc<Backlog>,
    kick: CancellationToken,
    why: Arc<KickReason>,
}

impl ConnHandle {
    fn push(&self, out: Outbound) {
        if let Kind::Message { chat, seq } = out.kind {
            let len = out.frame.encoded_len(self.codec);
            let queued = self.tx.max_capacity() - self.tx.capacity();
            if self.backlog.admit(chat, seq, len, queued, self.queue) {
                if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(out) {
                    self.backlog.taken(len);
                    self.backlog.miss(chat, seq);
                }
            }
        } else if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(out) {
            self.cut_off(Kick::Stalled);
        }
    }

    fn cut_off(&self, why: Kick) {
        let _ = self
            .why
            .0
            .compare_exchange(0, why as u8, Ordering::Relaxed, Ordering::Relaxed);
        self.kick.cancel();
    }
}

/// The connection's side: its queue, and how it learns it was cut off.
pub struct ConnInbox {
    pub id: ConnId,
    /// The client address the socket counts against.
    pub ip: IpAddr,
    pub rx: mpsc::Receiver<Outbound>,
    pub kick: CancellationToken,
    pub why: Arc<KickReason>,
    pub backlog: Arc<Backlog>,
}

/// Why a connection was refused before the upgrade: the cap it would have passed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The server holds its most sockets.
    Server,
    /// The user holds their most sockets.
    User,
    /// The client address holds its most sockets.
    Address,
}

/// Caps on open sockets: for the server, per user and per client address.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub total: usize,
    pub per_user: usize,
    pub per_ip: usize,
}

#[derive(Default)]
pub struct Registry {
    by_user: DashMap<UserId, Vec<ConnHandle>>,
    /// Where a user is named when their first socket here opens or their last one closes.
    presence: std::sync::OnceLock<mpsc::Sender<UserId>>,
    by_ip: DashMap<IpAddr, usize>,
    open: AtomicUsize,
    next_id: AtomicU64,
}

impl Registry {
    /// Registers a connection of `user` within the limits. It receives frames from now on.
    pub fn register(
        &self,
        session: Session,
        ip: IpAddr,
        codec: Codec,
        queue: QueueCaps,
        caps: Caps,
    ) -> Result<ConnInbox, Refused> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= caps.total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Server);
        }
        {
            let mut from_ip = self.by_ip.entry(ip).or_default();
            if *from_ip >= caps.per_ip {
                // This attempt took no slot of the address, so it gives none back.
                drop(from_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::Address);
            }
            *from_ip += 1;
        }
        let mut conns = self.by_user.entry(session.user).or_default();
        if conns.len() >= caps.per_user {
            drop(conns);
            self.release_ip(ip);
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::User);
        }
        let (tx, rx) = mpsc::channel(queue.frames + CONTROL_HEADROOM);
        let handle = ConnHandle {
            id: ConnId(self.next_id.fetch_add(1, Ordering::Relaxed)),
            jti: session.jti,
            sid: session.sid,
            codec,
            queue,
            tx,
            backlog: Arc::default(),
            kick: CancellationToken::new(),
            why: Arc::default(),
        };
        conns.push(handle.clone());
        let first = conns.len() == 1;
        drop(conns);
        if first {
            self.presence_changed(session.user);
        }
        metrics::gauge!(m::WS_CONNECTIONS).increment(1.0);
        metrics::counter!(m::WS_CONNECTS).increment(1);
        Ok(ConnInbox {
            id: handle.id,
            ip,
            rx,
            kick: handle.kick,
            why: handle.why,
            backlog: handle.backlog,
        })
    }

    /// Gives back one socket of `ip`; the entry goes with the address's last socket.
    fn release_ip(&self, ip: IpAddr) {
        self.by_ip.remove_if_mut(&ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }

    pub fn unregister(&self, user: UserId, ip: IpAddr, id: ConnId) {
        self.release_ip(ip);
        // The closure drops our handle; the entry goes when it was the user's last connection.
        let last = self.by_user.remove_if_mut(&user, |_, conns| {
            conns.retain(|c| c.id != id);
            conns.is_empty()
        });
        if last.is_some() {
            self.presence_changed(user);
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(m::WS_CONNECTIONS).decrement(1.0);
    }

    /// Names users whose presence here changes on `tx`, from now on; false when something
    /// already follows it.
    pub fn follow_presence(&self, tx: mpsc::Sender<UserId>) -> bool {
        self.presence.set(tx).is_ok()
    }

    fn presence_changed(&self, user: UserId) {
        if let Some(tx) = self.presence.get() {
            // A full queue loses the name; the presence task's tick finds the difference.
            let _ = tx.try_send(user);
        }
    }

    /// Whether `user` has a socket open here.
    pub fn has_user(&self, user: UserId) -> bool {
        self.by_user.contains_key(&user)
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }

    /// The users with a socket open here.
    pub fn online_users(&self) -> Vec<UserId> {
        self.by_user.iter().map(|e| *e.key()).collect()
    }

    /// Queues `out` for every connection of every user in `users` but `except`; returns how
    /// many connections it was queued for.
    pub fn deliver(&self, users: &[UserId], except: Option<ConnId>, out: &Outbound) -> u64 {
        let mut queued = 0;
        for user in users {
            if let Some(conns) = self.by_user.get(user) {
                for conn in conns.iter().filter(|c| Some(c.id) != except) {
                    conn.push(out.clone());
                    queued += 1;
                }
            }
        }
        queued
    }

    /// Cuts off every connection.
    pub fn cut_off_all(&self, why: Kick) {
        for conns in self.by_user.iter() {
            for conn in conns.iter() {
                conn.cut_off(why);
            }
        }
    }

    /// Cuts off every connection of `user` that authenticated with token or session `id`.
    pub fn revoke(&self, user: UserId, id: Uuid) {
        if let Some(conns) = self.by_user.get(&user) {
            for conn in conns.iter().filter(|c| c.jti == id || c.sid == id) {
                conn.cut_off(Kick::Revoked);
            }
        }
    }

    /// Queues `out` for one connection, if it is still open.
    pub fn deliver_to(&self, user: UserId, id: ConnId, out: Outbound) {
        if let Some(conns) = self.by_user.get(&user) {
            if let Some(conn) = conns.iter().find(|c| c.id == id) {
                conn.push(out);
            }
        }
    }
}

//! Sends to the other nodes: a bounded queue drained by one task, which sends whatever has
//! gathered in one go per channel. What it carries is best effort (a full queue drops it,
//! counted): events, heartbeats, and the ranges of committed messages, announced right after
//! their commit, which the position checks find if they are lost.
//!
//! A commit is announced after it, never inside it: PostgreSQL holds a database-wide lock from a
//! notifying transaction's commit until its WAL is flushed, so notifying commits cannot share a
//! flush, and with two nodes committing, acks waited for each other's flushes (docs/scaling.md).
//! A node that has heard no other node announces nothing at all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{encode_ranges, ranges_of, Channel, Event, Seal, Transport};
use crate::ids::UserId;
use crate::metrics as m;
use crate::protocol::Message;
use crate::protocol::ServerFrame;

/// A message whose body is at most this long and whose chat has at most this many members
/// travels whole; others are named by seq. Well inside NOTIFY's 8,000 bytes.
const CARRIED_BODY_MAX: usize = 2048;
const CARRIED_MEMBERS_MAX: usize = 64;

/// Payloads waiting to be sent; more are dropped.
const QUEUE: usize = 4096;
/// Most payloads sent in one go.
const BATCH: usize = 256;

#[derive(Clone)]
pub struct Publisher {
    node: Arc<str>,
    seal: Seal,
    peers: Arc<Peers>,
    tx: mpsc::Sender<(Channel, String)>,
}

/// When another node was last heard from, shared by the listener (which hears them) and the
/// publisher (which announces only while there is someone to hear).
pub struct Peers {
    started: Instant,
    /// Milliseconds after `started` of the last word from another node, plus one; 0 for never.
    heard_ms: AtomicU64,
}

/// Without a word from another node for this long, a node is alone: it announces no commits
/// and checks no positions.
pub const PEERS_GONE_AFTER: Duration = Duration::from_secs(60);

impl Peers {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            heard_ms: AtomicU64::new(0),
        }
    }

    /// Notes a word from another node; true when none was around before.
    pub fn heard(&self) -> bool {
        let was = self.around();
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.heard_ms.store(now, Ordering::Relaxed);
        !was
    }

    /// Whether other nodes may be listening and committing: one was heard lately.
    pub fn around(&self) -> bool {
        match self.heard_ms.load(Ordering::Relaxed) {
            0 => false,
            at => {
                self.started.elapsed().as_millis() as u64 + 1 - at
                    < PEERS_GONE_AFTER.as_millis() as u64
            }
        }
    }
}

impl Publisher {
    /// Starts the sending task, which ends at `stop`.
    pub fn start<T: Transport>(
        transport: Arc<T>,
        node: &str,
        seal: Seal,
        stop: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(transport, rx, stop));
        Self {
            node: Arc::from(node),
            seal,
            peers: Arc::new(Peers::new()),
            tx,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The seal this node's events carry and others' must.
    pub fn seal(&self) -> &Seal {
        &self.seal
    }

    /// Who else is around.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Announces committed messages to the other nodes, if any was heard, each with the
    /// members of its chat at the commit. One that fits in a payload is carried whole and
    /// sealed, so the other nodes deliver it without reading it back; a larger one is named by
    /// its seq, and read.
    pub fn announce<'a>(&self, stored: impl IntoIterator<Item = (&'a Message, &'a [UserId])>) {
        if !self.peers.around() {
            return;
        }
        let mut named = Vec::new();
        let mut carried = 0u64;
        for (message, members) in stored {
            if message.body.len() <= CARRIED_BODY_MAX && members.len() <= CARRIED_MEMBERS_MAX {
                let frame = ServerFrame::Message {
                    message: message.clone(),
                };
                let (payloads, too_large) = Event::encode(&self.seal, &self.node, members, &frame);
                if let ([payload], 0) = (payloads.as_slice(), too_large) {
                    self.queue(Channel::Events, payload.clone());
                    carried += 1;
                    continue;
                }
            }
            named.push((message.chat_id, message.seq));
        }
        metrics::counter!(m::BUS_ANNOUNCED, "how" => "carried").increment(carried);
        metrics::counter!(m::BUS_ANNOUNCED, "how" => "named").increment(named.len() as u64);
        for payload in encode_ranges(&self.node, &ranges_of(named)) {
            self.queue(Channel::Messages, payload);
        }
    }

    /// Queues `frame` for the sockets of `users` on the other nodes.
    pub fn publish(&self, users: &[UserId], frame: &ServerFrame) {
        let (payloads, too_large) = Event::encode(&self.seal, &self.node, users, frame);
        if too_large > 0 {
            metrics::counter!(m::BUS_TOO_LARGE).increment(too_large as u64);
        }
        for payload in payloads {
            self.queue(Channel::Events, payload);
        }
    }

    /// Queues this node's heartbeat, which its own listener expects to hear.
    pub fn heartbeat(&self) {
        self.queue(Channel::Events, Event::heartbeat(&self.seal, &self.node));
    }

    fn queue(&self, channel: Channel, payload: String) {
        if self.tx.try_send((channel, payload)).is_err() {
            metrics::counter!(m::BUS_DROPPED).increment(1);
        }
    }
}

async fn send_all<T: Transport>(
    transport: Arc<T>,
    mut rx: mpsc::Receiver<(Channel, String)>,
    stop: CancellationToken,
) {
    let mut queued = Vec::with_capacity(BATCH);
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            got = rx.recv_many(&mut queued, BATCH) => got,
        };
        if got == 0 {
            return;
        }
        let count = queued.len() as u64;
        if let Err(e) = transport.send(std::mem::take(&mut queued)).await {
            tracing::warn!(error = %e, count, "could not send to other nodes");
            metrics::counter!(m::BUS_DROPPED).increment(count);
        }
    }
}

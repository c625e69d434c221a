//! Sends to the other nodes: a bounded queue drained by one task, which sends whatever has
//! gathered in one go per channel. What it carries is best effort (a full queue drops it,
//! counted): events, heartbeats, and, on a bus that cannot announce inside the commit, the
//! ranges of committed messages, which the position checks find if they are lost.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{encode_ranges, ranges_of, Channel, Event, Seal, Transport};
use crate::ids::{ChatId, UserId};
use crate::metrics as m;
use crate::protocol::ServerFrame;

/// Payloads waiting to be sent; more are dropped.
const QUEUE: usize = 4096;
/// Most payloads sent in one go.
const BATCH: usize = 256;

#[derive(Clone)]
pub struct Publisher {
    node: Arc<str>,
    seal: Seal,
    announces_in_commit: bool,
    tx: mpsc::Sender<(Channel, String)>,
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
        let announces_in_commit = transport.announces_in_commit();
        tokio::spawn(send_all(transport, rx, stop));
        Self {
            node: Arc::from(node),
            seal,
            announces_in_commit,
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

    /// The node to name in a group commit's own announcement; None when the commit is
    /// announced afterwards, through [`Publisher::announce`].
    pub fn in_commit(&self) -> Option<&str> {
        self.announces_in_commit.then_some(&*self.node)
    }

    /// Announces the committed messages `(chat, seq)`, unless their commit did.
    pub fn announce(&self, stored: impl IntoIterator<Item = (ChatId, i64)>) {
        if self.announces_in_commit {
            return;
        }
        for payload in encode_ranges(&self.node, &ranges_of(stored)) {
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
        let (messages, events): (Vec<_>, Vec<_>) =
            queued.drain(..).partition(|(c, _)| *c == Channel::Messages);
        for (channel, queued) in [(Channel::Messages, messages), (Channel::Events, events)] {
            if queued.is_empty() {
                continue;
            }
            let count = queued.len() as u64;
            let payloads = queued.into_iter().map(|(_, p)| p).collect();
            if let Err(e) = transport.send(channel, payloads).await {
                tracing::warn!(error = %e, channel = channel.name(), count, "could not send to other nodes");
                metrics::counter!(m::BUS_DROPPED).increment(count);
            }
        }
    }
}

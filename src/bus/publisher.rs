//! Sends to the other nodes: a bounded queue drained by one task, which sends whatever has
//! gathered in one go per channel. What it carries is best effort (a full queue drops it,
//! counted): events, heartbeats, and the ranges of committed messages, announced right after
//! their commit, which the position checks find if they are lost.
//!
//! A commit is announced after it, never inside it: PostgreSQL holds a database-wide lock from a
//! notifying transaction's commit until its WAL is flushed, so notifying commits cannot share a
//! flush, and with two nodes committing, acks waited for each other's flushes (docs/scaling.md).
//! A node that has heard no other node announces nothing at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{encode_ranges, ranges_of, Channel, Dest, Event, Inbox, Seal, Transport, PAYLOAD_MAX};
use crate::ids::UserId;
use crate::metrics as m;
use crate::protocol::Message;
use crate::protocol::ServerFrame;

/// A message whose body is at most this long and whose chat has at most this many members
/// travels whole; others are named by seq. Well inside NOTIFY's 8,000 bytes.
const CARRIED_BODY_MAX: usize = 2048;
const CARRIED_MEMBERS_MAX: usize = 64;

/// A payload waiting to be sent, and whether it goes alone, never packed with others (a
/// heartbeat, which nodes of every version read).
type Queued = (Channel, String, bool);

/// Payloads waiting to be sent; more are dropped.
const QUEUE: usize = 4096;
/// Most payloads sent in one go.
const BATCH: usize = 256;

#[derive(Clone)]
pub struct Publisher {
    node: Arc<str>,
    seal: Seal,
    peers: Arc<Peers>,
    tx: mpsc::Sender<Queued>,
}

/// When another node was last heard from, shared by the listener (which hears them) and the
/// publisher (which announces only while there is someone to hear).
pub struct Peers {
    started: Instant,
    /// Milliseconds after `started` of the last word from another node, plus one; 0 for never.
    heard_ms: AtomicU64,
    /// Like `heard_ms`, for the last heartbeat from a node that reads one event to a payload.
    legacy_ms: AtomicU64,
    /// The other nodes by their heartbeats: when each was last heard, and its inbox if it
    /// reads one. Never held across an await.
    nodes: Mutex<HashMap<String, (Instant, Option<Inbox>)>>,
}

/// Without a word from another node for this long, a node is alone: it announces no commits
/// and checks no positions.
pub const PEERS_GONE_AFTER: Duration = Duration::from_secs(60);

impl Peers {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            heard_ms: AtomicU64::new(0),
            legacy_ms: AtomicU64::new(0),
            nodes: Mutex::new(HashMap::new()),
        }
    }

    /// Notes another node's heartbeat, and whether it reads an inbox.
    pub fn heartbeat_from(&self, node: &str, inbox: bool) {
        let inbox = inbox.then(|| Inbox::of(node));
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match nodes.get_mut(node) {
            Some(known) => *known = (Instant::now(), inbox),
            None => {
                nodes.insert(node.to_owned(), (Instant::now(), inbox));
            }
        }
    }

    /// The inboxes of the nodes heard lately, when each of them reads one; None when some
    /// node does not (an older version) or none was heard by its heartbeat yet: then events
    /// go on the channel every node hears.
    fn inboxes(&self) -> Option<Vec<Inbox>> {
        let nodes = self.heard_lately();
        if nodes.is_empty() {
            return None;
        }
        nodes.values().map(|(_, inbox)| inbox.clone()).collect()
    }

    /// How many other nodes were heard by their heartbeats lately.
    pub fn nodes_heard(&self) -> usize {
        self.heard_lately().len()
    }

    /// The other nodes heard by their heartbeats, less those not heard lately.
    fn heard_lately(&self) -> MutexGuard<'_, HashMap<String, (Instant, Option<Inbox>)>> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|_, (at, _)| at.elapsed() < PEERS_GONE_AFTER);
        nodes
    }

    /// Notes a word from another node; true when none was around before.
    pub fn heard(&self) -> bool {
        let was = self.around();
        self.mark(&self.heard_ms);
        !was
    }

    /// Whether other nodes may be listening and committing: one was heard lately.
    pub fn around(&self) -> bool {
        self.lately(&self.heard_ms)
    }

    /// Notes a heartbeat from a node of a version that reads one event to a payload.
    pub fn heard_legacy(&self) {
        self.mark(&self.legacy_ms);
    }

    fn mark(&self, at: &AtomicU64) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        at.store(now, Ordering::Relaxed);
    }

    /// Whether such a node was heard lately: until it is gone, events go one to a payload.
    pub fn legacy_around(&self) -> bool {
        self.lately(&self.legacy_ms)
    }

    fn lately(&self, at: &AtomicU64) -> bool {
        match at.load(Ordering::Relaxed) {
            0 => false,
            at => {
                self.started.elapsed().as_millis() as u64 + 1 - at
                    < PEERS_GONE_AFTER.as_millis() as u64
            }
        }
    }
}

impl Publisher {
    /// Starts the sending task, which ends at `stop`. It waits up to `linger` after a payload
    /// for others to send with it.
    pub fn start<T: Transport>(
        transport: Arc<T>,
        node: &str,
        seal: Seal,
        linger: Duration,
        stop: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let peers = Arc::new(Peers::new());
        let node: Arc<str> = Arc::from(node);
        let sending = send_all(transport, node.clone(), peers.clone(), linger, rx, stop);
        tokio::spawn(sending);
        Self {
            node,
            seal,
            peers,
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
    pub fn peers(&self) -> &Arc<Peers> {
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
        let heartbeat = Event::heartbeat(&self.seal, &self.node);
        if self
            .tx
            .try_send((Channel::Events, heartbeat, true))
            .is_err()
        {
            metrics::counter!(m::BUS_DROPPED).increment(1);
        }
    }

    fn queue(&self, channel: Channel, payload: String) {
        if self.tx.try_send((channel, payload, false)).is_err() {
            metrics::counter!(m::BUS_DROPPED).increment(1);
        }
    }
}

async fn send_all<T: Transport>(
    transport: Arc<T>,
    node: Arc<str>,
    peers: Arc<Peers>,
    linger: Duration,
    mut rx: mpsc::Receiver<Queued>,
    stop: CancellationToken,
) {
    let mut queued = Vec::with_capacity(BATCH);
    let mut link = T::Link::default();
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            got = rx.recv_many(&mut queued, BATCH) => got,
        };
        if got == 0 {
            return;
        }
        // Whatever comes within the linger goes in the same notification: one round trip
        // here and one wake-up on each other node for several commits' announcements.
        let until = Instant::now() + linger;
        while queued.len() < BATCH && !linger.is_zero() {
            let room = BATCH - queued.len();
            let more = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(until) => break,
                more = rx.recv_many(&mut queued, room) => more,
            };
            if more == 0 {
                break;
            }
        }
        metrics::histogram!(m::BUS_BATCH).record(queued.len() as f64);
        let count = queued.len() as u64;
        // Nodes of a version that does not unpack read only single events.
        let packs = !peers.legacy_around();
        let payloads = address(pack(&node, queued.drain(..), packs), peers.inboxes());
        if let Err(e) = transport.send(&mut link, payloads).await {
            tracing::warn!(error = %e, count, "could not send to other nodes");
            metrics::counter!(m::BUS_DROPPED).increment(count);
        }
    }
}

/// The events of `queued` gathered into as few payloads as fit below [`PAYLOAD_MAX`], in order:
/// `node`, then one sealed event per line (sealed JSON holds no newline). The other payloads go
/// as they are. A commit's carried messages, answers and events then cost the far node one
/// notification, not one each, and the sending node, which hears its own, skips them by the
/// first line without opening them.
fn pack(node: &str, queued: impl Iterator<Item = Queued>, packs: bool) -> Vec<Queued> {
    let mut out = Vec::new();
    let mut events = String::new();
    for (channel, payload, alone) in queued {
        if channel != Channel::Events || alone || !packs {
            out.push((channel, payload, alone));
            continue;
        }
        if events.len() > node.len() && events.len() + 1 + payload.len() >= PAYLOAD_MAX {
            out.push((Channel::Events, std::mem::take(&mut events), false));
        }
        if events.is_empty() {
            events.push_str(node);
        }
        events.push('\n');
        events.push_str(&payload);
    }
    if !events.is_empty() {
        out.push((Channel::Events, events, false));
    }
    out
}

/// Where each payload of `packed` goes: packed events to each node's inbox when every node
/// heard reads one, the rest (heartbeats, which a node expects to hear itself; the messages
/// channel) on the channel every node hears.
fn address(packed: Vec<Queued>, inboxes: Option<Vec<Inbox>>) -> Vec<(Dest, String)> {
    let mut out = Vec::with_capacity(packed.len());
    for (channel, payload, alone) in packed {
        match &inboxes {
            Some(inboxes) if channel == Channel::Events && !alone => {
                if let Some((last, rest)) = inboxes.split_last() {
                    for inbox in rest {
                        out.push((Dest::Inbox(inbox.clone()), payload.clone()));
                    }
                    out.push((Dest::Inbox(last.clone()), payload));
                }
            }
            _ => out.push((Dest::All(channel), payload)),
        }
    }
    out
}

/// The sending node of a payload on the events channel and its sealed events; a payload from
/// a node that does not pack is one sealed event, its node inside.
pub fn unpack(payload: &str) -> (Option<&str>, std::str::Split<'_, char>) {
    match payload.split_once('\n') {
        Some((node, events)) => (Some(node), events.split('\n')),
        None => (None, payload.split('\n')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_events_go_to_every_inbox_only_when_every_node_heard_reads_one() {
        let peers = Peers::new();
        let queued = || {
            vec![
                (Channel::Messages, "n|1:1-2".to_owned(), false),
                (Channel::Events, "heartbeat".to_owned(), true),
                (Channel::Events, "node-a\nsealed".to_owned(), false),
            ]
        };
        let all = |c, p: &str| (Dest::All(c), p.to_owned());
        let everyone = vec![
            all(Channel::Messages, "n|1:1-2"),
            all(Channel::Events, "heartbeat"),
            all(Channel::Events, "node-a\nsealed"),
        ];
        assert_eq!(
            address(queued(), peers.inboxes()),
            everyone,
            "no node heard yet"
        );
        peers.heartbeat_from("node-b", true);
        peers.heartbeat_from("node-c", true);
        let addressed = address(queued(), peers.inboxes());
        assert_eq!(
            addressed[..2],
            everyone[..2],
            "heartbeats and ranges to all"
        );
        let mut inboxes: Vec<Dest> = addressed[2..].iter().map(|(d, _)| d.clone()).collect();
        inboxes.sort_by_key(|d| format!("{d:?}"));
        let mut expected = vec![
            Dest::Inbox(Inbox::of("node-b")),
            Dest::Inbox(Inbox::of("node-c")),
        ];
        expected.sort_by_key(|d| format!("{d:?}"));
        assert_eq!(inboxes, expected, "the packed events once to each inbox");
        assert!(addressed[2..].iter().all(|(_, p)| p == "node-a\nsealed"));
        // A node of a version without inboxes: everything on the shared channels again.
        peers.heartbeat_from("node-old", false);
        assert_eq!(address(queued(), peers.inboxes()), everyone);
        assert_ne!(Inbox::of("node-b"), Inbox::of("node-c"));
        assert_eq!(
            Inbox::of("node-b").channel().len(),
            "xfchat_events_".len() + 16
        );
    }

    #[test]
    fn events_are_packed_in_order_into_payloads_below_the_limit_and_others_left_alone() {
        let event = |i: usize| (Channel::Events, format!("{i}.{}", "x".repeat(500)), false);
        let mut queued: Vec<_> = (0..40).map(event).collect();
        queued.insert(5, (Channel::Messages, "n|1:1-2".to_owned(), false));
        queued.insert(9, (Channel::Events, "heartbeat".to_owned(), true));
        let unpacked = pack("node-a", queued.clone().into_iter(), false);
        assert_eq!(unpacked.len(), 42, "for older nodes, one payload each");
        let packed = pack("node-a", queued.into_iter(), true);
        assert_eq!(packed[0], (Channel::Messages, "n|1:1-2".to_owned(), false));
        assert_eq!(
            packed[1],
            (Channel::Events, "heartbeat".to_owned(), true),
            "alone"
        );
        let packed = &packed[1..];
        let lines: Vec<&str> = packed[1..]
            .iter()
            .inspect(|(c, p, _)| assert!(*c == Channel::Events && p.len() < PAYLOAD_MAX))
            .flat_map(|(_, p, _)| {
                let (node, events) = unpack(p);
                assert_eq!(node, Some("node-a"));
                events
            })
            .collect();
        assert_eq!(
            packed.len(),
            1 + 3,
            "40 events of 500 bytes in three payloads"
        );
        let expected: Vec<String> = (0..40).map(|i| event(i).1).collect();
        assert_eq!(lines, expected);
        let (node, mut events) = unpack("tag.{\"node\":\"old\"}");
        assert_eq!(
            (node, events.next()),
            (None, Some("tag.{\"node\":\"old\"}"))
        );
    }
}

//! Which nodes are around, as heard on the bus: the listener notes every word from another
//! node; the publisher announces commits only while one was heard lately; and each chat has an
//! owner among the nodes heard in the last few seconds, which commits the chat's sends.
//!
//! Ownership is rendezvous hashing of the chat over the live nodes' ids, so every node that
//! hears the same nodes picks the same owner, and a node joining or leaving moves only its
//! share of the chats. Nodes that briefly disagree both commit to a chat, which stays correct
//! (the database orders the seqs) and is only slower.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::ChatId;

/// Without a word from another node for this long, a node is alone: it announces no commits
/// and checks no positions.
pub const PEERS_GONE_AFTER: Duration = Duration::from_secs(60);

/// A node not heard for this long (three heartbeats) owns no chats.
const LIVE_FOR: Duration = Duration::from_secs(6);

pub struct Peers {
    me: Arc<str>,
    started: Instant,
    /// Milliseconds after `started` of the last word from another node, plus one; 0 for never.
    heard_ms: AtomicU64,
    /// Like `heard_ms`, for the last heartbeat from a node of a version that neither owns chats
    /// nor reads packed events.
    legacy_ms: AtomicU64,
    /// When each other node was last heard.
    seen: Mutex<HashMap<Arc<str>, Instant>>,
    /// The nodes that own chats, this one included, and when that was last pruned: a list not
    /// pruned lately (the listener is down) is not trusted, and this node owns every chat.
    live: RwLock<(Instant, Arc<[Arc<str>]>)>,
}

impl Peers {
    pub fn new(me: &str) -> Self {
        let me: Arc<str> = Arc::from(me);
        Self {
            live: RwLock::new((Instant::now(), Arc::from([me.clone()]))),
            me,
            started: Instant::now(),
            heard_ms: AtomicU64::new(0),
            legacy_ms: AtomicU64::new(0),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Notes a word from `node`, which takes sends for its chats when `owns` (its heartbeats
    /// say so; a node of a version that does not is never an owner); true when no other node
    /// was around before.
    pub fn heard(&self, node: &str, owns: bool) -> bool {
        let was = self.around();
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.heard_ms.store(now, Ordering::Relaxed);
        if !owns {
            return !was;
        }
        let new = {
            let mut seen = self.seen.lock().expect("never poisoned");
            match seen.get_mut(node) {
                Some(at) => {
                    *at = Instant::now();
                    false
                }
                None => {
                    seen.insert(Arc::from(node), Instant::now());
                    true
                }
            }
        };
        if new {
            self.prune();
        }
        !was
    }

    /// Forgets nodes not heard for a while; called at every listener tick.
    pub fn prune(&self) {
        let live: Vec<Arc<str>> = {
            let mut seen = self.seen.lock().expect("never poisoned");
            seen.retain(|_, at| at.elapsed() < LIVE_FOR);
            let mut live: Vec<Arc<str>> = seen.keys().cloned().collect();
            live.push(self.me.clone());
            live.sort();
            live
        };
        metrics::gauge!(crate::metrics::BUS_NODES).set(live.len() as f64);
        *self.live.write().expect("never poisoned") = (Instant::now(), Arc::from(live));
    }

    /// Whether other nodes may be listening and committing: one was heard lately.
    pub fn around(&self) -> bool {
        self.lately(&self.heard_ms)
    }

    /// Notes a heartbeat from a node of a version before chats had owners.
    pub fn heard_legacy(&self) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.legacy_ms.store(now, Ordering::Relaxed);
    }

    /// Whether a node of a version before chats had owners was heard lately: until it is gone,
    /// events go one to a payload, which it reads.
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

    /// The other node that commits `chat`'s sends; None when this one does.
    pub fn owner(&self, chat: ChatId) -> Option<Arc<str>> {
        let (pruned, live) = self.live.read().expect("never poisoned").clone();
        if live.len() < 2 || pruned.elapsed() > LIVE_FOR {
            return None;
        }
        let owner = live.iter().max_by_key(|node| weight(node, chat))?;
        (**owner != *self.me).then(|| owner.clone())
    }
}

/// A stable pseudo-random weight of `node` for `chat` (FNV-1a, then a 64-bit finaliser), the
/// same on every node and every version.
fn weight(node: &str, chat: ChatId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain(chat.0.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_that_hear_each_other_agree_on_every_chat_s_owner_and_share_the_chats() {
        let (a, b) = (Peers::new("node-a"), Peers::new("node-b"));
        assert_eq!(a.owner(ChatId(1)), None, "alone, a node owns every chat");
        a.heard("node-b", true);
        b.heard("node-a", true);
        let mut owned_by_a = 0;
        for chat in 1..=1000 {
            let (at_a, at_b) = (a.owner(ChatId(chat)), b.owner(ChatId(chat)));
            match (at_a.as_deref(), at_b.as_deref()) {
                (None, Some("node-a")) => owned_by_a += 1,
                (Some("node-b"), None) => {}
                other => panic!("chat {chat}: the nodes disagree: {other:?}"),
            }
        }
        assert!(
            (400..=600).contains(&owned_by_a),
            "a owns {owned_by_a} of 1000"
        );
        let c = Peers::new("node-c");
        c.heard("node-old", false);
        assert!(c.around());
        assert_eq!(
            c.owner(ChatId(1)),
            None,
            "a node that does not say it owns never does"
        );
    }
}

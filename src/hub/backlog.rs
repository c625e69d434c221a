//! How far a socket's outbound queue may grow, and what the socket missed while it was full.
//!
//! Chat messages are queued only while the socket is within its frame and byte caps. Past them
//! the socket is *behind*: its messages are no longer queued, only the first missed seq of each
//! chat is noted, and once its writer has drained the queue the connection reads what it missed
//! from the database. Acks and events are always queued (they are bounded by the socket's own
//! sends and chats), within a headroom above the frame cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::ids::ChatId;

/// Frames beyond the message cap kept for acks and events.
pub const CONTROL_HEADROOM: usize = 1024;

/// Caps on one socket's queued chat messages.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub frames: usize,
    pub bytes: usize,
}

/// Shared by the hub's side and the connection's side of one socket.
#[derive(Default)]
pub struct Backlog {
    behind: AtomicBool,
    bytes: AtomicUsize,
    /// The first seq of each chat not queued since the socket fell behind.
    missed: Mutex<HashMap<ChatId, i64>>,
    fell_behind: Notify,
}

impl Backlog {
    /// Whether a message of `len` bytes may join a queue holding `queued` frames; when not,
    /// the message is noted as missed and the socket is behind until it catches up.
    pub fn admit(&self, chat: ChatId, seq: i64, len: usize, queued: usize, caps: Caps) -> bool {
        let bytes = self.bytes.load(Ordering::Relaxed);
        if self.behind.load(Ordering::Relaxed) || queued >= caps.frames || bytes + len > caps.bytes
        {
            self.miss(chat, seq);
            return false;
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        true
    }

    /// Notes `seq` of `chat` as not delivered, and the socket as behind.
    pub fn miss(&self, chat: ChatId, seq: i64) {
        {
            let mut missed = self.missed.lock().unwrap_or_else(|e| e.into_inner());
            let first = missed.entry(chat).or_insert(seq);
            *first = (*first).min(seq);
        }
        if !self.behind.swap(true, Ordering::AcqRel) {
            self.fell_behind.notify_one();
        }
    }

    /// The connection took a message of `len` bytes out of the queue.
    pub fn taken(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// Bytes of chat messages waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_behind(&self) -> bool {
        self.behind.load(Ordering::Acquire)
    }

    /// What was missed, per chat; the socket is live again from here on (messages arriving
    /// meanwhile are queued, and the connection skips those it reads from the database too).
    pub fn take_missed(&self) -> HashMap<ChatId, i64> {
        let mut missed = self.missed.lock().unwrap_or_else(|e| e.into_inner());
        self.behind.store(false, Ordering::Release);
        std::mem::take(&mut *missed)
    }

    /// Resolves once the socket has fallen behind (at once if it did since the last call).
    pub async fn fell_behind(&self) {
        self.fell_behind.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_either_cap_a_socket_falls_behind_and_reports_the_first_missed_seq_per_chat() {
        let caps = Caps {
            frames: 4,
            bytes: 100,
        };
        let backlog = Backlog::default();
        let (a, b) = (ChatId(1), ChatId(2));
        assert!(backlog.admit(a, 1, 60, 0, caps));
        assert!(!backlog.admit(a, 2, 60, 1, caps), "over the byte cap");
        assert!(backlog.is_behind());
        assert!(
            !backlog.admit(b, 7, 1, 1, caps),
            "behind: nothing more is queued"
        );
        assert!(!backlog.admit(a, 3, 1, 1, caps));
        assert_eq!(backlog.queued_bytes(), 60);
        let missed = backlog.take_missed();
        assert_eq!(missed, HashMap::from([(a, 2), (b, 7)]));
        assert!(!backlog.is_behind());
        backlog.taken(60);
        assert!(!backlog.admit(a, 4, 1, 4, caps), "over the frame cap");
    }
}

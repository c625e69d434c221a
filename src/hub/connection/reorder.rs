//! Frames that came ahead of their turn. When members of a chat sit on two nodes, both nodes
//! commit into it, and each hears the other's commits over the bus a few milliseconds after
//! they were made: a socket's own ack for seq n+1 often reaches it before seq n, committed just
//! before on the other node, is heard. Reading the chat from the database at every such gap
//! cost a quarter of the nodes' CPU at 3,000 msg/s (docs/scaling.md). So a frame beyond the
//! cursor's next is kept for a moment, and written in its place as soon as the gap fills from
//! the live fan-out; only a gap still open after [`GRACE`] (a notification lost, a node gone)
//! is read from the database, as before, and the frames kept for it are given to that read.
//!
//! Bounded: at most [`KEPT_MAX`] frames and [`KEPT_BYTES_MAX`] bytes per socket (a message is
//! an `Arc` of a frame encoded once for every socket); past that the chat is read from the
//! database at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::{Connection, End};
use crate::ids::ChatId;
use crate::protocol::Encoded;

/// How long a gap may stay open before the chat is read from the database.
pub(super) const GRACE: Duration = Duration::from_millis(200);

/// The most frames, and bytes of them, a socket keeps waiting for gaps to fill.
const KEPT_MAX: usize = 256;
const KEPT_BYTES_MAX: usize = 512 * 1024;

/// A frame kept for its seq: a stored message, or this socket's ack standing for its own.
pub(super) enum Early {
    Message(Arc<Encoded>),
    Ack(Uuid, Arc<Encoded>),
}

impl Early {
    fn frame(&self) -> &Encoded {
        match self {
            Early::Message(frame) | Early::Ack(_, frame) => frame,
        }
    }
}

/// Per chat, since when its oldest open gap waits, and the frames kept beyond it.
#[derive(Default)]
pub(super) struct Reorder {
    chats: HashMap<ChatId, (Instant, BTreeMap<i64, Early>)>,
    kept: usize,
    bytes: usize,
}

impl Reorder {
    /// When the oldest gap runs out of time; None with nothing kept.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.chats.values().map(|(since, _)| *since + GRACE).min()
    }
}

impl Connection {
    /// Keeps `early` for seq `seq` of `chat`, which is beyond the cursor's next; an ack counts
    /// as in flight again until it is written. False when the socket keeps too many already:
    /// then the caller reads the chat from the database.
    pub(super) fn keep_early(&mut self, chat: ChatId, seq: i64, early: Early) -> bool {
        let reorder = &mut self.reorder;
        let bytes = early.frame().encoded_len(self.codec);
        if reorder.kept >= KEPT_MAX || reorder.bytes + bytes > KEPT_BYTES_MAX {
            return false;
        }
        let (_, frames) = reorder
            .chats
            .entry(chat)
            .or_insert_with(|| (Instant::now(), BTreeMap::new()));
        if frames.contains_key(&seq) {
            // The same seq again (a repair racing the fan-out): the first is kept.
            return true;
        }
        if let Early::Ack(id, _) = &early {
            self.in_flight.entry(*id).or_insert((chat, 0)).1 += 1;
        }
        frames.insert(seq, early);
        reorder.kept += 1;
        reorder.bytes += bytes;
        true
    }

    /// Writes what was kept for `chat` and is now the cursor's next, in order; the wait for
    /// what is still beyond a gap starts again.
    pub(super) async fn write_early(&mut self, chat: ChatId) -> Result<(), End> {
        let mut wrote = false;
        while let Some(cursor) = self.cursors.get(&chat).copied() {
            let Some((since, frames)) = self.reorder.chats.get_mut(&chat) else {
                break;
            };
            let Some(entry) = frames.first_entry() else {
                self.reorder.chats.remove(&chat);
                break;
            };
            if *entry.key() > cursor + 1 {
                if wrote {
                    *since = Instant::now();
                }
                break;
            }
            let (seq, early) = entry.remove_entry();
            self.forget_kept(&early);
            wrote = true;
            match early {
                Early::Message(frame) if seq == cursor + 1 => {
                    self.write_at(chat, seq, &frame).await?;
                }
                // Passed by the cursor meanwhile: written already.
                Early::Message(_) => {}
                // An ack is an answer, written even if its place went by.
                Early::Ack(_, frame) => {
                    self.answered(&frame.frame);
                    self.count_out(&frame.frame);
                    self.feed(frame.message(self.codec)).await?;
                    if seq == cursor + 1 {
                        self.cursors.insert(chat, seq);
                    }
                }
            }
        }
        Ok(())
    }

    /// Gives the chats whose gap ran out of time, or that have database work now (which writes
    /// their frames itself), to the database: their messages are read, their acks held for
    /// their places in that read, as if they had come out of order with no wait.
    pub(super) fn settle_early(&mut self) {
        if self.reorder.chats.is_empty() {
            return;
        }
        let now = Instant::now();
        let due: Vec<ChatId> = self
            .reorder
            .chats
            .iter()
            .filter(|(chat, (since, _))| now >= *since + GRACE || self.work.pending(**chat))
            .map(|(chat, _)| *chat)
            .collect();
        for chat in due {
            let Some((_, frames)) = self.reorder.chats.remove(&chat) else {
                continue;
            };
            for (seq, early) in frames {
                self.forget_kept(&early);
                if let Early::Ack(id, frame) = early {
                    // Counted in flight when kept; an ack held already is counted once.
                    if self.held_acks.insert(id, (chat, seq, frame)).is_some() {
                        self.unflight(id);
                    }
                }
                self.work.behind(chat, seq);
            }
        }
    }

    /// The chat is gone for this socket: its kept messages go, its kept acks are written.
    pub(super) async fn drop_early(&mut self, chat: ChatId) -> Result<(), End> {
        let Some((_, frames)) = self.reorder.chats.remove(&chat) else {
            return Ok(());
        };
        for (_, early) in frames {
            self.forget_kept(&early);
            if let Early::Ack(_, frame) = early {
                self.answered(&frame.frame);
                self.count_out(&frame.frame);
                self.feed(frame.message(self.codec)).await?;
            }
        }
        Ok(())
    }

    /// Counts `early` out of what the socket keeps.
    fn forget_kept(&mut self, early: &Early) {
        self.reorder.kept -= 1;
        self.reorder.bytes -= early.frame().encoded_len(self.codec);
    }

    /// One fewer answer awaited for send `id`.
    pub(super) fn unflight(&mut self, id: Uuid) {
        if let Some((_, n)) = self.in_flight.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&id);
            }
        }
    }
}

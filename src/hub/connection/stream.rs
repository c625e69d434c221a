//! The socket's outbound stream. Per chat the socket keeps a cursor: the last seq it wrote. A
//! live message is written only when it is the cursor's next; one at or below the cursor is
//! skipped; one beyond it means something was missed, which is read from the database and
//! written first. So each chat's messages reach the socket in seq order, each once, with no gap
//! from the position the client asked for, whatever the live fan-out did: it is only the fast
//! path, and the database is the log.

use std::sync::Arc;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;

use super::reorder::Early;
use super::{Connection, End};
use crate::hub::registry::{Kind, Outbound};
use crate::ids::ChatId;
use crate::metrics::reason;
use crate::protocol::{close, Encoded, Message, ServerFrame};

/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;

impl Connection {
    fn stalled(&self) -> End {
        let secs = self.hub.ws.stall_timeout.as_secs();
        tracing::debug!(secs, "socket stalled");
        End::Close(
            close::STALLED,
            "stalled: the client read nothing",
            reason::STALLED,
        )
    }

    /// Queues one frame for the socket without flushing. Fails when the socket is closed, cut
    /// off, or its client has read nothing for the stall timeout.
    pub(super) async fn feed(&mut self, msg: WsMessage) -> Result<(), End> {
        let stall = self.hub.ws.stall_timeout;
        let fed = tokio::select! {
            biased;
            _ = self.inbox.kick.cancelled() => return Err(self.kicked()),
            fed = tokio::time::timeout(stall, self.socket.feed(msg)) => fed,
        };
        match fed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone(reason::ERROR)),
            Err(_) => Err(self.stalled()),
        }
    }

    pub(super) async fn flush(&mut self) -> Result<(), End> {
        let stall = self.hub.ws.stall_timeout;
        let flushed = tokio::select! {
            biased;
            _ = self.inbox.kick.cancelled() => return Err(self.kicked()),
            flushed = tokio::time::timeout(stall, self.socket.flush()) => flushed,
        };
        match flushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone(reason::ERROR)),
            Err(_) => Err(self.stalled()),
        }
    }

    /// Writes a frame made here (a reply or an error) and flushes.
    pub(super) async fn reply(&mut self, frame: ServerFrame) -> Result<(), End> {
        self.count_out(&frame);
        let msg = self.codec.encode(&frame);
        self.feed(msg).await?;
        self.flush().await
    }

    pub(super) fn count_out(&self, frame: &ServerFrame) {
        self.hub.metrics.frame_out(frame.kind());
        if let ServerFrame::Error { code, .. } = frame {
            metrics::counter!(crate::metrics::WS_ERROR_FRAMES, "code" => code.as_str())
                .increment(1);
        }
    }

    /// Writes a queued frame and what else is already waiting (up to a batch) with one flush,
    /// so a busy socket costs one write call per batch rather than per frame.
    pub(super) async fn drain(&mut self, first: Outbound) -> Result<(), End> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(out) = next.take() {
            self.write_queued(out).await?;
            written += 1;
            if written < WRITE_BATCH {
                next = self.inbox.rx.try_recv().ok();
            }
        }
        self.flush().await
    }

    async fn write_queued(&mut self, out: Outbound) -> Result<(), End> {
        let depth = self.inbox.rx.len() as f64;
        self.hub.metrics.queue_depth.record(depth);
        let bytes = self.inbox.backlog.queued_bytes() as f64;
        self.hub.metrics.queue_bytes.record(bytes);
        match out.kind {
            Kind::Message { chat, seq } => {
                self.inbox.backlog.taken(out.frame.encoded_len(self.codec));
                return self.live(chat, seq, out.frame).await;
            }
            Kind::Reply { since, acked } => {
                if let ServerFrame::Error { code, .. } = &out.frame.frame {
                    crate::metrics::send_refused(*code);
                }
                let early = self.answered(&out.frame.frame);
                if let Some(since) = since {
                    self.hub.metrics.ack_latency.record(since.elapsed());
                }
                if early {
                    return Ok(());
                }
                if let Some((chat, seq)) = acked {
                    return self.acked(chat, seq, &out.frame).await;
                }
            }
            Kind::Event => match &out.frame.frame {
                // Nothing of the chat comes after this frame: its stream stops here.
                ServerFrame::ChatRemoved { chat_id } => {
                    self.forget(*chat_id).await?;
                    self.removed.insert(*chat_id);
                }
                // A member again (added back): its live messages come again.
                ServerFrame::Chat { chat } => {
                    self.removed.remove(&chat.id);
                }
                _ => {}
            },
        }
        self.count_out(&out.frame.frame);
        self.feed(out.frame.message(self.codec)).await
    }

    /// Forgets the send a reply answers. True when its ack was written already, in the
    /// message's place in the stream (see [`Connection::in_place`]).
    pub(super) fn answered(&mut self, frame: &ServerFrame) -> bool {
        let id = match frame {
            ServerFrame::Ack { client_msg_id, .. } => *client_msg_id,
            ServerFrame::Error {
                reference: Some(reference),
                ..
            } => match reference.send_id() {
                Some(id) => id,
                None => return false,
            },
            _ => return false,
        };
        if self.acked_early.remove(&id) {
            return true;
        }
        self.unflight(id);
        false
    }

    /// The frame to write for a stored message: the message, or, for one of this socket's own
    /// sends whose ack has not come yet, that ack. Between nodes, a later message (or a position
    /// repair) can bring a send's message before the persister's ack; the ack is written in
    /// its place, so the stream stays in seq order with each message once, and the persister's
    /// ack is not written again when it comes.
    fn in_place(&mut self, frame: ServerFrame) -> ServerFrame {
        match frame {
            ServerFrame::Message { message } if self.is_own_in_flight_message(&message) => {
                let id = message.client_msg_id;
                self.answered(&ServerFrame::Ack {
                    client_msg_id: id,
                    message: message.clone(),
                });
                // A held ack was the persister's: no other is coming for it.
                if self.held_acks.remove(&id).is_none() {
                    self.acked_early.insert(id);
                }
                ServerFrame::Ack {
                    client_msg_id: id,
                    message,
                }
            }
            other => other,
        }
    }

    /// A message from the live fan-out, written in its place in the chat's order: when it is
    /// the cursor's next and the chat has no database work pending. One beyond the cursor's
    /// next is kept a moment for the gap to fill (see [`super::reorder`]); otherwise the chat
    /// is read from the database, this message included.
    async fn live(&mut self, chat: ChatId, seq: i64, frame: Arc<Encoded>) -> Result<(), End> {
        if self.removed.contains(&chat) {
            return Ok(());
        }
        match self.cursors.get(&chat).copied() {
            _ if self.work.pending(chat) => {
                self.work.behind(chat, seq);
                return Ok(());
            }
            // Held until the client's first frame says where to start.
            None if self.greeting_until.is_some() => {
                let held = self.held.entry(chat).or_insert((seq, seq));
                *held = (held.0.min(seq), held.1.max(seq));
                return Ok(());
            }
            // A chat the client never gave a position for starts at the live tail.
            None => {}
            Some(cursor) if seq <= cursor => return Ok(()),
            Some(cursor) if cursor.checked_add(1) == Some(seq) => {}
            Some(_) => {
                if !self.keep_early(chat, seq, Early::Message(frame)) {
                    self.work.behind(chat, seq);
                }
                return Ok(());
            }
        }
        self.write_at(chat, seq, &frame).await?;
        self.write_early(chat).await
    }

    /// Writes a stored message at the cursor's next (as this socket's ack when it is one of
    /// its own sends still in flight) and moves the cursor.
    pub(super) async fn write_at(
        &mut self,
        chat: ChatId,
        seq: i64,
        frame: &Encoded,
    ) -> Result<(), End> {
        if self.is_own_in_flight(&frame.frame) {
            let ack = self.in_place(frame.frame.clone());
            self.count_out(&ack);
            self.feed(self.codec.encode(&ack)).await?;
        } else {
            self.count_out(&frame.frame);
            self.feed(frame.message(self.codec)).await?;
        }
        self.cursors.insert(chat, seq);
        Ok(())
    }

    fn is_own_in_flight(&self, frame: &ServerFrame) -> bool {
        matches!(frame, ServerFrame::Message { message } if self.is_own_in_flight_message(message))
    }

    fn is_own_in_flight_message(&self, message: &Message) -> bool {
        message.sender_id == self.user
            && self
                .in_flight
                .get(&message.client_msg_id)
                .is_some_and(|(chat, _)| *chat == message.chat_id)
    }

    /// An ack, which stands for its message on this socket: written when it is the cursor's
    /// next (the cursor moves past it) or is for a message the socket already had (a resend).
    /// Otherwise it is held back, the send counts as in flight again, and reading the chat from
    /// the database writes the ack in its message's place.
    async fn acked(&mut self, chat: ChatId, seq: i64, frame: &Arc<Encoded>) -> Result<(), End> {
        let cursor = self.cursors.get(&chat).copied();
        let had = cursor.is_some_and(|c| seq <= c);
        let pending = self.work.pending(chat);
        let out_of_order = pending || cursor.is_some_and(|c| seq > c + 1);
        if !had && out_of_order && !self.removed.contains(&chat) {
            if let ServerFrame::Ack { client_msg_id, .. } = &frame.frame {
                let early = Early::Ack(*client_msg_id, frame.clone());
                if !pending && self.keep_early(chat, seq, early) {
                    return Ok(());
                }
                if self
                    .held_acks
                    .insert(*client_msg_id, (chat, seq, frame.clone()))
                    .is_none()
                {
                    self.in_flight.entry(*client_msg_id).or_insert((chat, 0)).1 += 1;
                }
                self.work.behind(chat, seq);
                return Ok(());
            }
        }
        self.count_out(&frame.frame);
        self.feed(frame.message(self.codec)).await?;
        if !had && !self.removed.contains(&chat) {
            self.cursors.insert(chat, seq);
            return self.write_early(chat).await;
        }
        Ok(())
    }

    /// Writes the acks held back for `chat` that its stream did not write in their messages'
    /// places (their messages lie at or before where the stream started), as they are.
    pub(super) async fn release_acks(&mut self, chat: ChatId) -> Result<(), End> {
        let cursor = self.cursors.get(&chat).copied();
        self.release_acks_upto(chat, cursor).await
    }

    /// Writes the acks held back for `chat` up to `upto` (all of them without).
    async fn release_acks_upto(&mut self, chat: ChatId, cursor: Option<i64>) -> Result<(), End> {
        let due: Vec<Uuid> = self
            .held_acks
            .iter()
            .filter(|(_, (c, seq, _))| *c == chat && cursor.is_none_or(|at| *seq <= at))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some((_, _, frame)) = self.held_acks.remove(&id) {
                self.answered(&frame.frame);
                self.count_out(&frame.frame);
                self.feed(frame.message(self.codec)).await?;
            }
        }
        Ok(())
    }

    /// Writes a page read from the database, moving the cursor; own sends not acked yet are
    /// written as their acks.
    pub(super) async fn write_page(&mut self, chat: ChatId, page: Vec<Message>) -> Result<(), End> {
        self.hub.metrics.from_database.increment(page.len() as u64);
        for message in page {
            let seq = message.seq;
            let frame = Encoded::new(self.in_place(ServerFrame::Message { message }));
            self.count_out(&frame.frame);
            self.feed(frame.message(self.codec)).await?;
            self.cursors.insert(chat, seq);
        }
        Ok(())
    }

    /// Ends the greeting: what was held for chats the client gave no position for is read
    /// from the first held message on; chats it gave a position for are read from it.
    pub(super) fn end_greeting(&mut self) {
        if self.greeting_until.take().is_none() {
            return;
        }
        for (chat, (first, last)) in std::mem::take(&mut self.held) {
            self.note_behind(chat, first);
            self.work.behind(chat, last);
        }
    }

    /// The chat is gone for this socket (left, removed, or found not a member): its stream
    /// stops here; acks held for it are answers to sends and are written.
    pub(super) async fn forget(&mut self, chat: ChatId) -> Result<(), End> {
        self.work.behind.remove(&chat);
        self.drop_early(chat).await?;
        self.release_acks_upto(chat, None).await?;
        self.cursors.remove(&chat);
        Ok(())
    }
}

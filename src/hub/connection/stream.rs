//! The socket's outbound stream. Per chat the socket keeps a cursor: the last seq it wrote. A
//! live message is written only when it is the cursor's next; one at or below the cursor is
//! skipped; one beyond it means something was missed, which is read from the database and
//! written first. So each chat's messages reach the socket in seq order, each once, with no gap
//! from the position the client asked for, whatever the live fan-out did: it is only the fast
//! path, and the database is the log.

use std::time::Duration;

use tokio::time::Instant;

use futures_util::SinkExt;
use tokio::sync::mpsc::error::TryRecvError;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{Connection, End};
use crate::db::messages;
use crate::db::Op;
use crate::error::AppError;
use crate::hub::registry::{Kind, Outbound};
use crate::ids::ChatId;
use crate::metrics::reason;
use crate::protocol::{close, Encoded, Message, ServerFrame};

/// Rows read per query when a socket syncs, repairs a gap or catches up.
pub(super) const PAGE: i64 = 500;

/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;

/// Why streaming from the database stopped early.
pub(super) enum Stop {
    /// The socket is done for.
    End(End),
    /// The database failed; the cursor stays where the last written message left it.
    Db(AppError),
}

impl From<AppError> for Stop {
    fn from(e: AppError) -> Self {
        Stop::Db(e)
    }
}

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
    /// so a busy socket costs one write call per batch rather than per frame. Once the queue is
    /// empty, a socket that fell behind catches up.
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
        self.flush().await?;
        if self.inbox.backlog.is_behind() && self.inbox.rx.is_empty() {
            self.catch_up().await?;
        }
        Ok(())
    }

    async fn write_queued(&mut self, out: Outbound) -> Result<(), End> {
        let depth = self.inbox.rx.len() as f64;
        self.hub.metrics.queue_depth.record(depth);
        let bytes = self.inbox.backlog.queued_bytes() as f64;
        self.hub.metrics.queue_bytes.record(bytes);
        match out.kind {
            Kind::Message { chat, seq } => {
                self.inbox.backlog.taken(out.frame.encoded_len(self.codec));
                return self.live(chat, seq, &out.frame).await;
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
            Kind::Event => {}
        }
        self.count_out(&out.frame.frame);
        self.feed(out.frame.message(self.codec)).await
    }

    /// Forgets the send a reply answers. True when its ack was written already, in the
    /// message's place in the stream (see [`Connection::in_place`]).
    fn answered(&mut self, frame: &ServerFrame) -> bool {
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
        if let Some((_, n)) = self.in_flight.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&id);
            }
        }
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
                if !self.held_acks.remove(&id) {
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

    /// A message from the live fan-out, written in its place in the chat's order.
    async fn live(&mut self, chat: ChatId, seq: i64, frame: &Encoded) -> Result<(), End> {
        match self.cursors.get(&chat).copied() {
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
            Some(cursor) => match self.stream(chat, cursor, Some(seq), i64::MAX).await {
                Ok(_) => {}
                Err(Stop::End(end)) => return Err(end),
                Err(Stop::Db(e)) => {
                    // The gap cannot be filled now: hold this message back too, and retry
                    // from the cursor when catching up.
                    tracing::warn!(error = %e, "could not repair a gap from the database");
                    self.inbox.backlog.miss(chat, seq);
                    return Ok(());
                }
            },
        }
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

    /// An ack, which stands for its message on this socket: whatever of the chat comes before
    /// it is written first, and the cursor moves past it. An ack for a message the socket has
    /// already had (a resend) is written as it is.
    async fn acked(&mut self, chat: ChatId, seq: i64, frame: &Encoded) -> Result<(), End> {
        let mut gap = false;
        if let Some(cursor) = self.cursors.get(&chat).copied() {
            if seq > cursor.saturating_add(1) {
                match self.stream(chat, cursor, Some(seq), i64::MAX).await {
                    Ok(_) => {}
                    Err(Stop::End(end)) => return Err(end),
                    // The gap cannot be read now: hold the ack back, so that nothing of the
                    // chat comes after it out of order or twice. The send counts as in flight
                    // again, and catching up (from the cursor, once the database answers)
                    // writes the ack in its message's place.
                    Err(Stop::Db(_)) => {
                        self.inbox.backlog.miss(chat, cursor + 1);
                        if let ServerFrame::Ack { client_msg_id, .. } = &frame.frame {
                            if self.held_acks.insert(*client_msg_id) {
                                self.in_flight.entry(*client_msg_id).or_insert((chat, 0)).1 += 1;
                            }
                            return Ok(());
                        }
                        gap = true;
                    }
                }
            }
        }
        self.count_out(&frame.frame);
        self.feed(frame.message(self.codec)).await?;
        if !gap {
            let cursor = self.cursors.entry(chat).or_insert(seq);
            *cursor = (*cursor).max(seq);
        }
        Ok(())
    }

    /// Writes the stored messages of `chat` after `after` (and before `until`, at most
    /// `limit`), a page per query and one flush per page, moving the cursor as it goes.
    /// Returns the last seq written (or `after` when there was nothing).
    ///
    /// Boxed: reading the database is the rare path, and its future (over a kilobyte) would
    /// otherwise be part of every idle socket's task.
    pub(super) async fn stream(
        &mut self,
        chat: ChatId,
        after: i64,
        until: Option<i64>,
        limit: i64,
    ) -> Result<i64, Stop> {
        Box::pin(self.stream_stored(chat, after, until, limit)).await
    }

    async fn stream_stored(
        &mut self,
        chat: ChatId,
        after: i64,
        until: Option<i64>,
        limit: i64,
    ) -> Result<i64, Stop> {
        let mut cursor = after;
        let mut remaining = limit;
        self.cursors.insert(chat, cursor);
        while remaining > 0 {
            let page = {
                // Catch-up reads share at most half the pool guard's permits, so a reconnect
                // storm cannot starve sends.
                let _slot = self
                    .hub
                    .catchups
                    .acquire()
                    .await
                    .map_err(|_| Stop::Db(AppError::Unavailable))?;
                let mut conn = self.hub.db.conn(Op::Sync).await?;
                messages::page(&mut conn, chat, Some(cursor), until, PAGE.min(remaining)).await?
            };
            let Some(last) = page.last() else { break };
            let (last_seq, count) = (last.seq, page.len() as i64);
            let full = count == PAGE.min(remaining);
            self.hub.metrics.from_database.increment(count as u64);
            for message in page {
                let frame = Encoded::new(self.in_place(ServerFrame::Message { message }));
                self.count_out(&frame.frame);
                self.feed(frame.message(self.codec))
                    .await
                    .map_err(Stop::End)?;
            }
            self.flush().await.map_err(Stop::End)?;
            remaining -= count;
            cursor = last_seq;
            self.cursors.insert(chat, cursor);
            if !full {
                break;
            }
        }
        Ok(cursor)
    }

    /// Reads from the database what the socket missed while behind, chat by chat, then goes
    /// back to live delivery.
    pub(super) async fn catch_up(&mut self) -> Result<(), End> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        self.retry_at = None;
        let missed: Vec<(ChatId, i64)> = self.inbox.backlog.take_missed().into_iter().collect();
        for (i, &(chat, first)) in missed.iter().enumerate() {
            let from = self.cursors.get(&chat).copied().unwrap_or(first - 1);
            match self.stream(chat, from, None, i64::MAX).await {
                Ok(_) => {}
                Err(Stop::End(end)) => return Err(end),
                Err(Stop::Db(e)) => {
                    // Everything not caught up yet waits for the next try.
                    tracing::warn!(error = %e, "catch-up from the database failed; will retry");
                    for &(chat, first) in &missed[i..] {
                        let at = self.cursors.get(&chat).map_or(first, |c| c + 1);
                        self.inbox.backlog.miss(chat, at);
                    }
                    self.retry_at = Some(Instant::now() + RETRY);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Ends the greeting: what was held for chats the client gave no position for is written
    /// from the first held message on; chats it gave a position for already have it.
    pub(super) async fn end_greeting(&mut self) -> Result<(), End> {
        if self.greeting_until.take().is_none() {
            return Ok(());
        }
        for (chat, (first, last)) in std::mem::take(&mut self.held) {
            let from = self.cursors.get(&chat).copied().unwrap_or(first - 1);
            if from < last {
                match self.stream(chat, from, None, i64::MAX).await {
                    Ok(_) => {}
                    Err(Stop::End(end)) => return Err(end),
                    Err(Stop::Db(_)) => self.inbox.backlog.miss(chat, from + 1),
                }
            }
        }
        Ok(())
    }

    /// Takes whatever is queued right now, without waiting.
    pub(super) async fn drain_ready(&mut self) -> Result<(), End> {
        match self.inbox.rx.try_recv() {
            Ok(out) => self.drain(out).await,
            Err(TryRecvError::Empty) => {
                if self.inbox.backlog.is_behind() {
                    self.catch_up().await?;
                }
                Ok(())
            }
            Err(TryRecvError::Disconnected) => Err(End::Gone(reason::ERROR)),
        }
    }
}

/// How long a catch-up that failed on the database waits before it tries again.
pub(super) const RETRY: Duration = Duration::from_secs(1);

//! What a finished database read brings to the socket: a page of a sync or of a catch-up,
//! written in its place and followed by `synced` when a sync is complete, or the membership of
//! a resume's chats. A failed read is tried again later by the socket itself.

use super::fetch::{Ask, Fetched, PAGE};
use super::frames::chat_error;
use super::{Connection, End};
use crate::error::AppError;
use crate::ids::ChatId;
use crate::protocol::{Message, Ref, ServerFrame};

impl Connection {
    pub(super) async fn on_fetched(&mut self, fetched: Fetched) -> Result<(), End> {
        self.work.reading = None;
        let failure = match fetched {
            Fetched::Members(Ok(tails)) => return self.on_members(tails).await,
            Fetched::Page {
                chat,
                after,
                for_ask: true,
                result: Ok(page),
            } => return self.on_page(chat, after, page).await,
            Fetched::Page {
                chat,
                after,
                for_ask: false,
                result: Ok(page),
            } => {
                self.work.failures = 0;
                return self.caught_up_page(chat, after, page).await;
            }
            Fetched::Members(Err(e)) | Fetched::Page { result: Err(e), .. } => e,
        };
        // Counted, not logged at warn: during an outage every socket with a read pending
        // fails every two seconds.
        tracing::debug!(error = %failure, "a socket's read from the database failed; retrying");
        self.hub.metrics.read_retries.increment(1);
        self.work.failed();
        Ok(())
    }

    async fn on_page(
        &mut self,
        chat: ChatId,
        after: i64,
        page: Option<(i64, Vec<Message>)>,
    ) -> Result<(), End> {
        self.work.failures = 0;
        let sync = match self.work.asks.front_mut() {
            Some(Ask::Sync {
                chat: asked,
                after: from,
                remaining,
                started,
                ..
            }) if *asked == chat => Some((from, remaining, started)),
            _ => None,
        };
        let Some((from, remaining, started)) = sync else {
            return Ok(()); // not the ask it was read for (cannot be): read again
        };
        let Some((last_seq, messages)) = page else {
            let reference = self.finish_sync();
            self.forget(chat).await?;
            let frame = chat_error(&AppError::NotFound, reference, chat);
            return self.reply(frame).await;
        };
        if !*started {
            // Past the chat's end there is nothing to send: the positions stay within the
            // chat's seqs, so no arithmetic on a client number can overflow.
            *started = true;
            let at = (*from).min(last_seq);
            self.cursors.insert(chat, at);
            self.removed.remove(&chat);
        } else {
            match self.cursors.get(&chat) {
                // The chat was removed from this socket while it synced.
                None => {
                    let reference = self.finish_sync();
                    let frame = chat_error(&AppError::NotFound, reference, chat);
                    return self.reply(frame).await;
                }
                // Read from a position the stream has left: read again.
                Some(&at) if at != after => return Ok(()),
                Some(_) => {}
            }
        }
        let asked = PAGE.min(*remaining);
        let count = messages.len() as i64;
        *remaining -= count;
        let done = count < asked || *remaining == 0;
        self.write_page(chat, messages).await?;
        if done {
            let reference = self.finish_sync();
            self.synced(chat, last_seq, reference).await?;
        }
        self.flush().await
    }

    /// A page of a chat that was behind: written if it follows the cursor; once the chat's end
    /// is reached (and every seq known to be stored), the chat is live again.
    async fn caught_up_page(
        &mut self,
        chat: ChatId,
        after: i64,
        page: Option<(i64, Vec<Message>)>,
    ) -> Result<(), End> {
        let Some((_, messages)) = page else {
            // Not a member any more: the stream stops; `chat_removed` is on its way.
            return self.forget(chat).await.and(self.flush().await);
        };
        if self.cursors.get(&chat) != Some(&after) {
            return Ok(());
        }
        let full = messages.len() as i64 == PAGE;
        let empty = messages.is_empty();
        self.write_page(chat, messages).await?;
        let cursor = self.cursors.get(&chat).copied().unwrap_or(after);
        let target = self.work.behind.get(&chat).copied().unwrap_or(0);
        // An empty page below a known seq cannot be read further: give up on it rather than
        // read for ever.
        if !full && (cursor >= target || empty) {
            self.work.behind.remove(&chat);
            self.release_acks(chat).await?;
        }
        self.flush().await
    }

    /// Takes the front ask, a sync being answered now; its `ref`.
    fn finish_sync(&mut self) -> Option<Ref> {
        match self.work.asks.pop_front() {
            Some(Ask::Sync { reference, .. }) => reference,
            _ => unreachable!("the front ask is the sync being answered"),
        }
    }

    /// Answers a sync with where it reached; acks held for the chat at or before it are
    /// written first.
    async fn synced(
        &mut self,
        chat: ChatId,
        last_seq: i64,
        reference: Option<Ref>,
    ) -> Result<(), End> {
        let reached = self.cursors.get(&chat).copied().unwrap_or(0);
        if self.work.behind.get(&chat).is_some_and(|&t| t <= reached) {
            self.work.behind.remove(&chat);
        }
        self.release_acks(chat).await?;
        let frame = ServerFrame::Synced {
            chat_id: chat,
            last_seq: reached,
            more: reached < last_seq,
            reference,
        };
        self.count_out(&frame);
        self.feed(self.codec.encode(&frame)).await
    }

    /// A resume's chats checked in one query: each chat the user is not in gets an error
    /// naming it, each at or past its end is answered at once, and each behind becomes a sync.
    async fn on_members(&mut self, tails: Vec<(ChatId, i64, Option<i64>)>) -> Result<(), End> {
        self.work.failures = 0;
        let Some(Ask::Resume {
            positions,
            epoch,
            reference,
        }) = self.work.asks.pop_front()
        else {
            return Ok(());
        };
        let current = self.hub.epoch();
        // Positions of an older epoch are trusted only up to where the chat was rewound.
        let stale = epoch.is_some_and(|e| e != current);
        let tails: std::collections::HashMap<ChatId, (i64, Option<i64>)> = tails
            .into_iter()
            .map(|(chat, last, rewound_to)| (chat, (last, rewound_to)))
            .collect();
        let mut syncs = Vec::new();
        for (chat, stated) in positions {
            let mut at = stated;
            if let Some(&(last, rewound_to)) = tails.get(&chat) {
                if stale {
                    at = at.min(rewound_to.unwrap_or(last));
                }
                at = at.min(last);
                if at < stated {
                    let frame = ServerFrame::Rewound {
                        chat_id: chat,
                        seq: at,
                        epoch: current,
                    };
                    self.count_out(&frame);
                    self.feed(self.codec.encode(&frame)).await?;
                }
            }
            match tails.get(&chat).map(|&(last, _)| last) {
                None => {
                    let frame = chat_error(&AppError::NotFound, reference.clone(), chat);
                    self.count_out(&frame);
                    self.feed(self.codec.encode(&frame)).await?;
                }
                Some(last) if at >= last => {
                    self.cursors.insert(chat, last);
                    self.removed.remove(&chat);
                    self.synced(chat, last, reference.clone()).await?;
                }
                Some(_) => syncs.push(Ask::Sync {
                    chat,
                    after: at,
                    remaining: i64::MAX,
                    reference: reference.clone(),
                    started: false,
                }),
            }
        }
        for ask in syncs.into_iter().rev() {
            self.work.asks.push_front(ask);
        }
        self.flush().await
    }
}

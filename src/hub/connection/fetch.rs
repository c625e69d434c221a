//! What a socket still has to read from the database, and the one read it has in flight.
//!
//! Syncs, resumes, gap repairs and catch-ups are work items, not awaits: the connection starts
//! one database read at a time as a future it polls beside the socket and its queue, so it keeps
//! answering pings, taking sends and writing live frames of other chats while a read runs. A
//! read the database fails is retried by the socket itself, with backoff and jitter, whatever
//! the client does next. After every event the connection calls [`Connection::schedule`], so no
//! work waits for a client frame or a new message to wake it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::Connection;
use crate::db::{messages, replica, DbConn, Op};
use crate::error::{AppError, AppResult};
use crate::hub::Hub;
use crate::ids::{ChatId, UserId};
use crate::protocol::{Message, Ref};

/// Rows read per query when a socket syncs, repairs a gap or catches up.
pub(super) const PAGE: i64 = 500;

/// A client's ask, in the order it came.
pub(super) enum Ask {
    /// Stream `chat` after `after` (at most `remaining` messages), then `synced`.
    Sync {
        chat: ChatId,
        after: i64,
        remaining: i64,
        reference: Option<Ref>,
        /// Set once the first page has placed the cursor.
        started: bool,
    },
    /// Check membership of every named chat in one query, then sync each from its position.
    Resume {
        positions: BTreeMap<ChatId, i64>,
        epoch: Option<uuid::Uuid>,
        reference: Option<Ref>,
    },
}

impl Ask {
    fn names(&self, chat: ChatId) -> bool {
        match self {
            Ask::Sync { chat: c, .. } => *c == chat,
            Ask::Resume { positions, .. } => positions.contains_key(&chat),
        }
    }
}

/// What a finished read brought.
pub(super) enum Fetched {
    /// A page of `chat` after `after`: the chat's last seq and its messages, or None when the
    /// user is not a member; read for the client's oldest ask, or for a chat that is behind.
    Page {
        chat: ChatId,
        after: i64,
        for_ask: bool,
        result: AppResult<Option<(i64, Vec<Message>)>>,
    },
    /// The member chats of a resume, with their last seqs.
    /// Per chat: its last seq and the lowest seq a rewind set it back to.
    Members(AppResult<Vec<(ChatId, i64, Option<i64>)>>),
}

pub(super) type Reading = Pin<Box<dyn Future<Output = Fetched> + Send>>;

/// The socket's database work.
#[derive(Default)]
pub(super) struct Work {
    /// The client's syncs and resumes, oldest first; the first is being served.
    pub asks: VecDeque<Ask>,
    /// Per chat, a seq known to be stored beyond the cursor: a live message dropped because it
    /// could not be written in order, a missed one, an ack held back. Read from the cursor to
    /// the chat's end.
    pub behind: HashMap<ChatId, i64>,
    /// The read in flight.
    pub reading: Option<Reading>,
    /// When a failed read may be tried again, and how many failed in a row.
    pub retry_at: Option<Instant>,
    pub failures: u32,
}

impl Work {
    /// Whether `chat` has database work pending, so its live frames must wait for it.
    pub fn pending(&self, chat: ChatId) -> bool {
        self.behind.contains_key(&chat) || self.asks.iter().any(|a| a.names(chat))
    }

    /// Notes that `seq` of `chat` is stored and must be read from the database.
    pub fn behind(&mut self, chat: ChatId, seq: i64) {
        let target = self.behind.entry(chat).or_insert(seq);
        *target = (*target).max(seq);
    }

    /// The wait before the next try after a failed read: 100 ms doubling to 2 s, with jitter
    /// so that sockets failed together do not retry together.
    pub fn failed(&mut self) {
        let base = Duration::from_millis(100) * 2u32.saturating_pow(self.failures.min(5));
        let wait = base
            .min(MAX_BACKOFF)
            .mul_f64(rand::thread_rng().gen_range(0.5..1.0));
        self.failures += 1;
        self.retry_at = Some(Instant::now() + wait);
    }
}

/// The longest wait between two tries of a failed read.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A connection for a socket's read, within the catch-up share of the pool guard: the slot
/// and the guarded connection, both given back on drop.
async fn reader(hub: &Hub) -> AppResult<(OwnedSemaphorePermit, DbConn)> {
    let slot = hub.catchup_slot().await?;
    if hub.faults.fails_stream_read() {
        return Err(AppError::Unavailable);
    }
    Ok((slot, hub.db.conn(Op::Sync).await?))
}

/// A page of `chat` for `user`.
fn page(hub: Arc<Hub>, user: UserId, at: (ChatId, i64), limit: i64, for_ask: bool) -> Reading {
    let (chat, after) = at;
    Box::pin(async move {
        let result = async {
            let (_slot, mut conn) = reader(&hub).await?;
            if !hub.db.has_replica() {
                return messages::stream_page(&mut conn, user, chat, after, limit).await;
            }
            // Membership and the chat's end from the primary; the rows from the replica, as
            // far as it has them.
            let Some(last_seq) = messages::member_last_seq(&mut conn, user, chat).await? else {
                return Ok(None);
            };
            drop(conn);
            let upto = last_seq.min(after.saturating_add(limit));
            let messages = replica::range(&hub.db, Op::Sync, chat, after, upto).await?;
            Ok(Some((last_seq, messages)))
        }
        .await;
        Fetched::Page {
            chat,
            after,
            for_ask,
            result,
        }
    })
}

/// Which of `chats` `user` is in, with their last seqs.
fn members(hub: Arc<Hub>, user: UserId, chats: Vec<ChatId>) -> Reading {
    Box::pin(async move {
        let result = async {
            let (_slot, mut conn) = reader(&hub).await?;
            messages::member_tails(&mut conn, user, &chats).await
        }
        .await;
        Fetched::Members(result)
    })
}

impl Connection {
    /// Starts the next database read when none is in flight and no retry is waiting: the
    /// client's oldest ask first, then any chat that is behind. Called after every event.
    pub(super) fn schedule(&mut self) {
        if self.work.reading.is_some() || self.greeting_until.is_some() {
            return;
        }
        if self.work.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.work.retry_at = None;
        if self.inbox.rx.is_empty() && self.inbox.backlog.is_behind() {
            // What the full queue could not take: read from the database once the queue has
            // been written, so each chat's queued messages come first.
            for (chat, first) in self.inbox.backlog.take_missed() {
                self.note_behind(chat, first);
            }
        }
        let (hub, user) = (self.hub.clone(), self.user);
        let reading = match self.work.asks.front() {
            Some(Ask::Sync {
                chat,
                after,
                remaining,
                started,
                ..
            }) => {
                let from = if *started {
                    self.cursors.get(chat).copied().unwrap_or(*after)
                } else {
                    *after
                };
                page(hub, user, (*chat, from), PAGE.min(*remaining), true)
            }
            Some(Ask::Resume { positions, .. }) => {
                members(hub, user, positions.keys().copied().collect())
            }
            None => {
                // A chat behind reads from its cursor; one without (its ask failed) has nothing
                // to read from.
                let cursors = &self.cursors;
                self.work
                    .behind
                    .retain(|chat, _| cursors.contains_key(chat));
                let Some((&chat, _)) = self.work.behind.iter().next() else {
                    return;
                };
                page(hub, user, (chat, cursors[&chat]), PAGE, false)
            }
        };
        self.work.reading = Some(reading);
    }

    /// A stored message the socket must read from the database: from its cursor, or from
    /// `seq` when it has none yet.
    pub(super) fn note_behind(&mut self, chat: ChatId, seq: i64) {
        if self.removed.contains(&chat) {
            return;
        }
        if !self.cursors.contains_key(&chat) && !self.work.asks.iter().any(|a| a.names(chat)) {
            self.cursors.insert(chat, seq - 1);
        }
        self.work.behind(chat, seq);
    }
}

/// Waits for the read in flight; for ever without one.
pub(super) async fn finished(reading: &mut Option<Reading>) -> Fetched {
    match reading {
        Some(reading) => reading.await,
        None => std::future::pending().await,
    }
}

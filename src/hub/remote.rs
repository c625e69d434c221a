//! What other nodes committed, delivered here: the bus names the seqs, one query reads them with
//! their chats' members, and each message goes through the same queues and socket cursors as a
//! local one (encoded once per codec, whatever the number of sockets). A position check against
//! `conversations.last_seq` finds what no notification announced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::registry::{Kind, Outbound};
use super::Hub;
use crate::bus::Range;
use crate::db::{messages, Op};
use crate::error::AppResult;
use crate::ids::{ChatId, UserId};
use crate::metrics as m;
use crate::protocol::{Encoded, ServerFrame};

/// A range longer than this is not read whole: its last message is delivered, and each socket
/// repairs the gap before it from the database, a page at a time.
const RANGE_MAX: i64 = 256;

/// Chats that saw no message for this long leave the periodic position check.
const ACTIVE_FOR: Duration = Duration::from_secs(600);

/// Per chat, the last seq this node delivered (its own commits and other nodes').
#[derive(Default)]
pub struct Positions {
    known: DashMap<ChatId, (i64, Instant)>,
}

impl Positions {
    pub fn saw(&self, chat: ChatId, seq: i64) {
        let now = Instant::now();
        let mut entry = self.known.entry(chat).or_insert((seq, now));
        *entry = (entry.0.max(seq), now);
    }

    fn get(&self, chat: ChatId) -> Option<i64> {
        self.known.get(&chat).map(|e| e.0)
    }

    /// Chats with a message in the last [`ACTIVE_FOR`]; the others are forgotten.
    fn active(&self) -> Vec<ChatId> {
        self.known.retain(|_, (_, at)| at.elapsed() < ACTIVE_FOR);
        self.known.iter().map(|e| *e.key()).collect()
    }
}

/// Which chats a position check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Chats with recent messages on this node: the periodic check.
    Active,
    /// Every chat with a member online on this node: after the bus was not heard for a while.
    Online,
}

/// What a position check found behind: per chat, the tail it saw last time.
#[derive(Default)]
pub struct Suspects(HashMap<ChatId, i64>);

impl Hub {
    /// Delivers what another node committed in `ranges`.
    pub async fn deliver_committed(&self, ranges: Vec<Range>) -> AppResult<()> {
        let ranges: Vec<Range> = ranges
            .into_iter()
            .filter_map(|r| {
                let known = self.positions.get(r.chat).unwrap_or(0);
                let first = r.first.max(known + 1).max(r.last - RANGE_MAX + 1);
                (first <= r.last).then_some(Range { first, ..r })
            })
            .collect();
        if ranges.is_empty() || self.registry.is_empty() {
            return Ok(());
        }
        let (messages, members) = {
            let mut conn = self.db.conn(Op::Bus).await?;
            messages::committed(&mut conn, &ranges).await?
        };
        let nobody: Vec<UserId> = Vec::new();
        for message in messages {
            let to = members.get(&message.chat_id).unwrap_or(&nobody);
            self.deliver_message(to, message);
        }
        Ok(())
    }

    /// Delivers a message another node committed to its members `users`, through the sockets'
    /// cursors: one read here, or one carried whole on the bus (then nothing is read back).
    pub fn deliver_message(&self, users: &[UserId], message: crate::protocol::Message) {
        self.positions.saw(message.chat_id, message.seq);
        let out = Outbound {
            kind: Kind::Message {
                chat: message.chat_id,
                seq: message.seq,
            },
            frame: Arc::new(Encoded::new(ServerFrame::Message { message })),
        };
        self.metrics
            .deliveries
            .increment(self.registry.deliver(users, None, &out));
    }

    /// Delivers an event another node sent to `users`.
    pub fn deliver_event(&self, users: &[UserId], frame: ServerFrame) {
        let out = Outbound {
            kind: Kind::Event,
            frame: Arc::new(Encoded::new(frame)),
        };
        self.registry.deliver(users, None, &out);
    }

    /// Delivers `chat`, read here, to `users`: what another node sent as a reference because
    /// the chat was too large for the bus. Best effort, like every event.
    pub async fn deliver_chat(&self, users: &[UserId], chat: ChatId) {
        let view = match self.db.conn(Op::Bus).await {
            Ok(mut conn) => crate::db::chats::for_newcomers(&mut conn, chat).await,
            Err(e) => Err(e),
        };
        match view {
            Ok(view) => self.deliver_event(users, ServerFrame::Chat { chat: view }),
            Err(e) => tracing::warn!(error = %e, %chat, "could not read a chat another node named"),
        }
    }

    /// Compares chats' last seqs with what this node delivered and delivers what it missed. In
    /// the periodic check a chat counts as missed only when it was already behind at the check
    /// before, so a commit being fanned out right now is not read twice.
    pub async fn check_positions(&self, scope: Scope, suspects: &mut Suspects) -> AppResult<()> {
        let tails = {
            let mut conn = self.db.conn(Op::Bus).await?;
            match scope {
                Scope::Active => {
                    let chats = self.positions.active();
                    if chats.is_empty() {
                        return Ok(());
                    }
                    messages::tails(&mut conn, &chats).await?
                }
                Scope::Online => {
                    let users = self.registry.online_users();
                    if users.is_empty() {
                        return Ok(());
                    }
                    messages::tails_of_members(&mut conn, &users).await?
                }
            }
        };
        let mut missed = Vec::new();
        let mut behind = HashMap::new();
        for (chat, last) in tails {
            let known = self.positions.get(chat);
            if known.is_some_and(|k| k >= last) || last < 1 {
                continue;
            }
            let upto = match scope {
                Scope::Online => last,
                Scope::Active => {
                    behind.insert(chat, last);
                    match suspects.0.get(&chat) {
                        Some(&before) if known.is_none_or(|k| k < before) => before,
                        _ => continue,
                    }
                }
            };
            let first = known.map_or(upto, |k| k + 1);
            missed.push(Range {
                chat,
                first,
                last: upto,
            });
        }
        if scope == Scope::Active {
            suspects.0 = behind;
        }
        if missed.is_empty() {
            return Ok(());
        }
        let count: i64 = missed.iter().map(|r| r.last - r.first + 1).sum();
        tracing::info!(
            chats = missed.len(),
            messages = count,
            ?scope,
            "repairing what the bus did not announce"
        );
        metrics::counter!(m::BUS_REPAIRED).increment(count as u64);
        self.deliver_committed(missed).await
    }
}

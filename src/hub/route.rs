//! One writer per chat across nodes. Every chat has an owner among the nodes that hear each
//! other (`bus::Peers::owner`), and a socket's send to a chat another node owns is forwarded
//! there on the bus, stored by that node's persister and answered back; the ack reaches the
//! socket here. Without this, two nodes storing into one chat each wait for the other's commit
//! to be flushed, since each commit holds its chats' rows (their `last_seq`) until then.
//!
//! The bus stays a hint: a send whose answer does not come within [`ANSWER_WITHIN`] (the owner
//! died, a payload was lost) is stored here instead, and one stored meanwhile by the owner is
//! found by its `client_msg_id` and answered as stored, never stored twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::persist::{self, ReplyTo, SendRequest};
use super::registry::{ConnId, Kind, Outbound};
use super::Hub;
use crate::bus::Answered;
use crate::db::messages::{NewMessage, Outcome};
use crate::error::AppError;
use crate::ids::UserId;
use crate::metrics as m;
use crate::protocol::{Encoded, ServerFrame};

/// How long a forwarded send waits for its owner's answer before it is stored here.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// How often forwarded sends are checked for answers overdue.
const SWEEP: Duration = Duration::from_millis(250);

/// Sends forwarded from here and not answered yet, by ticket.
#[derive(Default)]
pub struct Forwarded {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
}

struct Pending {
    message: NewMessage,
    user: UserId,
    conn: ConnId,
    received: Instant,
    sent: Instant,
}

impl Hub {
    /// Queues a send: for the node that owns its chat when that is another and the send came on
    /// a socket, else for this node's persister. Gives it back when neither can take it.
    pub(super) fn submit(&self, request: SendRequest) -> Result<(), SendRequest> {
        let (
            Some(bus),
            ReplyTo::Socket {
                user,
                conn,
                received,
            },
        ) = (&self.bus, &request.reply)
        else {
            return self.persister.submit(request);
        };
        let Some(owner) = bus.peers().owner(request.message.chat) else {
            return self.persister.submit(request);
        };
        let ticket = self.forwarded.next.fetch_add(1, Ordering::Relaxed);
        let pending = Pending {
            message: request.message.clone(),
            user: *user,
            conn: *conn,
            received: *received,
            sent: Instant::now(),
        };
        self.forwarded.lock().insert(ticket, pending);
        if bus.forward(&owner, ticket, &request.message) {
            return Ok(());
        }
        self.forwarded.lock().remove(&ticket);
        metrics::counter!(m::SENDS_FORWARDED, "result" => "unsent").increment(1);
        self.persister.submit(request)
    }

    /// Stores a send that node `from` forwarded here, answering it there.
    pub fn store_forwarded(&self, from: &str, ticket: u64, message: NewMessage) {
        let request = SendRequest {
            message,
            reply: ReplyTo::Remote {
                node: Arc::from(from),
                ticket,
            },
        };
        if let Err(request) = self.persister.submit(request) {
            persist::fail(
                &self.registry,
                self.bus.as_ref(),
                request.reply,
                &request.message,
                &AppError::Overloaded,
            );
        }
    }

    /// Answers the socket whose send `ticket` was: what its chat's owner did with it.
    pub fn forward_answered(&self, ticket: u64, outcome: Answered) {
        let Some(p) = self.forwarded.lock().remove(&ticket) else {
            // Overdue and stored here meanwhile: that answer went already.
            return;
        };
        metrics::counter!(m::SENDS_FORWARDED, "result" => "answered").increment(1);
        let reply = ReplyTo::Socket {
            user: p.user,
            conn: p.conn,
            received: p.received,
        };
        let outcome = match outcome {
            Answered::New(message) => Outcome::New(message),
            Answered::Replay(message) => Outcome::Replay(message),
            Answered::Refused { code, text } => {
                let frame = ServerFrame::error(code, text, Some(p.message.client_msg_id.into()));
                let out = Outbound {
                    kind: Kind::Reply {
                        since: None,
                        acked: None,
                    },
                    frame: Arc::new(Encoded::new(frame)),
                };
                self.registry.deliver_to(p.user, p.conn, out);
                return;
            }
        };
        persist::answer(&self.registry, None, reply, outcome, &p.message);
    }

    /// Stores here the forwarded sends whose answers are overdue.
    fn store_overdue(&self) {
        let overdue: Vec<Pending> = {
            let mut pending = self.forwarded.lock();
            let due: Vec<u64> = pending
                .iter()
                .filter(|(_, p)| p.sent.elapsed() >= ANSWER_WITHIN)
                .map(|(t, _)| *t)
                .collect();
            due.iter().filter_map(|t| pending.remove(t)).collect()
        };
        for p in overdue {
            metrics::counter!(m::SENDS_FORWARDED, "result" => "timed_out").increment(1);
            let request = SendRequest {
                message: p.message,
                reply: ReplyTo::Socket {
                    user: p.user,
                    conn: p.conn,
                    received: p.received,
                },
            };
            if let Err(request) = self.persister.submit(request) {
                persist::fail(
                    &self.registry,
                    None,
                    request.reply,
                    &request.message,
                    &AppError::Overloaded,
                );
            }
        }
    }
}

impl Forwarded {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().expect("never poisoned")
    }
}

/// Stores overdue forwarded sends here until the hub is gone.
pub fn sweep(hub: Weak<Hub>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP);
        loop {
            every.tick().await;
            match hub.upgrade() {
                Some(hub) => hub.store_overdue(),
                None => return,
            }
        }
    });
}

//! Persist, then fan out. A few workers commit the batches the dispatcher gathers (`dispatch`):
//! each stores its batch in one transaction (group commit), and only after the commit acks the
//! senders and queues the messages for every member. A chat is in one commit at a time, so each
//! chat's messages are committed and fanned out in seq order.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Duration, Instant};

use super::dispatch::{Batch, Dispatcher, Done};
use super::registry::{ConnId, Kind, Outbound, Registry};
use super::remote::Positions;
use super::slots::Slots;
use crate::bus::Publisher;
use crate::config::{Config, Faults};
use crate::db::messages::{self, Committed, Message, NewMessage, Outcome};
use crate::db::{Db, DbConn, Op};
use crate::error::{is_input_error, AppError};
use crate::ids::{ChatId, UserId};
use crate::metrics::{self as m, HubMetrics};
use crate::protocol::{Encoded, ErrorCode, ServerFrame};

/// Where the answer to a send goes.
pub enum ReplyTo {
    /// A socket: the ack or error is queued to that connection, in order with its other frames.
    Socket {
        user: UserId,
        conn: ConnId,
        received: Instant,
    },
    /// An HTTP request waiting for the outcome.
    Http(oneshot::Sender<Result<Persisted, AppError>>),
}

/// A stored message, and whether this send stored it or found it stored by an earlier try.
#[derive(Debug)]
pub enum Persisted {
    New(Message),
    Replay(Message),
}

pub struct SendRequest {
    pub message: NewMessage,
    pub reply: ReplyTo,
}

#[derive(Clone)]
pub struct Persister {
    sends: mpsc::Sender<SendRequest>,
}

/// What every persist worker shares.
#[derive(Clone)]
struct Shared {
    db: Db,
    registry: Arc<Registry>,
    positions: Arc<Positions>,
    /// Where commits are announced to other nodes; None without a bus.
    bus: Option<Publisher>,
    metrics: HubMetrics,
    faults: Faults,
    /// The webhook events each commit writes to the outbox; None without webhooks.
    hooks: Option<Arc<str>>,
}

impl Persister {
    pub fn start(
        db: Db,
        registry: Arc<Registry>,
        positions: Arc<Positions>,
        bus: Option<Publisher>,
        config: &Config,
        metrics: &HubMetrics,
    ) -> Self {
        let ws = &config.ws;
        let workers = ws.persist_workers.max(1);
        let peers = bus.as_ref().map(|b| b.peers().clone());
        let slots = Slots::start(workers, peers);
        let shared = Shared {
            db,
            registry,
            positions,
            bus,
            metrics: metrics.clone(),
            faults: config.faults.clone(),
            hooks: config
                .integrations
                .webhook
                .as_ref()
                .map(|w| w.events.as_str().into()),
        };
        let (done_tx, done) = mpsc::channel(workers);
        let workers = (0..workers)
            .map(|id| {
                let (tx, rx) = mpsc::channel(1);
                tokio::spawn(worker(id, rx, done_tx.clone(), shared.clone()));
                tx
            })
            .collect::<Vec<_>>();
        let (sends, rx) = mpsc::channel(ws.persist_queue * workers.len());
        let dispatcher = Dispatcher {
            sends: rx,
            hold: ws.persist_batch * workers.len(),
            workers,
            done,
            slots,
            batch_size: ws.persist_batch,
            linger: ws.persist_linger,
        };
        tokio::spawn(dispatcher.run());
        Self { sends }
    }

    /// Queues a send for the persist workers; gives it back when the queue is full.
    pub fn submit(&self, request: SendRequest) -> Result<(), SendRequest> {
        self.sends.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
        })
    }
}

/// How long a worker keeps its connection (and its permit) without a send to store. Taking a
/// connection from the pool and giving it back each cost a round trip (the pool pings it both
/// ways), twice the commit's own; a worker that keeps storing keeps its connection and pays
/// neither. Short, so that an idle worker never holds back the others' database work.
const KEEP_IDLE: Duration = Duration::from_millis(20);

/// Commits the batches the dispatcher hands it, one at a time, and tells it when each is
/// fanned out.
async fn worker(
    id: usize,
    mut batches: mpsc::Receiver<Batch>,
    done: mpsc::Sender<Done>,
    shared: Shared,
) {
    let registry = &shared.registry;
    let mut kept: Option<DbConn> = None;
    loop {
        let next = match timeout(KEEP_IDLE, batches.recv()).await {
            Ok(next) => next,
            Err(_) => {
                kept = None;
                batches.recv().await
            }
        };
        let Some(Batch { requests, slot }) = next else {
            break;
        };
        let (batch, replies): (Vec<NewMessage>, Vec<ReplyTo>) =
            requests.into_iter().map(|r| (r.message, r.reply)).unzip();
        let mut chats: Vec<ChatId> = batch.iter().map(|m| m.chat).collect();
        chats.sort_unstable();
        chats.dedup();
        let mut replies: Vec<Option<ReplyTo>> = replies.into_iter().map(Some).collect();
        let handled = AssertUnwindSafe(handle_batch(&shared, &mut kept, &batch, &mut replies))
            .catch_unwind()
            .await;
        if handled.is_err() {
            // The connection may be mid-statement: it goes back to the pool, which tests it.
            kept = None;
            // A bug, never client input: the worker carries on with the next batch, and the
            // sends of this one that were not answered yet are told to try again (a resend of
            // one that was stored is answered from the database, not stored twice).
            tracing::error!(sends = batch.len(), "persist worker panicked; restarted");
            metrics::counter!(m::PERSIST_RESTARTS).increment(1);
            let err = AppError::Internal(anyhow::anyhow!("persist worker panicked"));
            for (message, reply) in batch.iter().zip(replies) {
                if let Some(reply) = reply {
                    fail(registry, reply, message, &err);
                }
            }
        }
        drop(slot);
        if done.send(Done { worker: id, chats }).await.is_err() {
            break;
        }
    }
}

/// Commits one batch and answers each of its sends, taking its reply out of `replies`.
async fn handle_batch(
    shared: &Shared,
    kept: &mut Option<DbConn>,
    batch: &[NewMessage],
    replies: &mut [Option<ReplyTo>],
) {
    let Shared {
        registry,
        metrics,
        faults,
        positions,
        ..
    } = shared;
    metrics.batch_size.record(batch.len() as f64);
    if faults.panics_persist(batch) {
        panic!("fault injected into the persist worker");
    }
    let started = Instant::now();
    let bus = shared.bus.as_ref();
    let Committed { outcomes, members } =
        commit(&shared.db, kept, batch, shared.hooks.as_deref()).await;
    metrics.commit.record(started.elapsed());
    if let Some(bus) = bus {
        bus.announce(outcomes.iter().filter_map(|o| match o {
            Outcome::New(m) => Some((m, members.get(&m.chat_id)?.as_slice())),
            _ => None,
        }));
    }
    for ((outcome, reply), sent) in outcomes.into_iter().zip(replies).zip(batch) {
        let Some(reply) = reply.take() else { continue };
        match &outcome {
            Outcome::New(message) => {
                metrics.persisted.increment(1);
                positions.saw(message.chat_id, message.seq);
                let fanning = Instant::now();
                let except = match &reply {
                    ReplyTo::Socket { conn, .. } => Some(*conn),
                    ReplyTo::Http(_) => None,
                };
                let out = Outbound {
                    kind: Kind::Message {
                        chat: message.chat_id,
                        seq: message.seq,
                    },
                    frame: Arc::new(Encoded::new(ServerFrame::Message {
                        message: message.clone(),
                    })),
                };
                let members = &members[&message.chat_id];
                if !faults.loses_fanout(&message.body) {
                    metrics
                        .deliveries
                        .increment(registry.deliver(members, except, &out));
                }
                metrics.fanout.record(fanning.elapsed());
            }
            Outcome::Replay(_) => metrics.replays.increment(1),
            Outcome::Rejected(_) => {}
            Outcome::Failed(err) => {
                fail(registry, reply, sent, err);
                continue;
            }
        }
        answer(registry, reply, outcome, sent);
    }
}

/// Stores `batch` so that one send cannot fail the others. PostgreSQL refuses a whole
/// transaction for one bad value (class 22) or one broken constraint (class 23); then the batch
/// is split in halves, each committed on its own, down to the one send at fault, which alone is
/// refused. Halves are committed in order, so each chat's sends keep their order. A database
/// failure (connection lost, timeout) fails only the sends not yet committed, and the kept
/// connection goes back to the pool (which tests it) rather than serving the next batch.
async fn commit(
    db: &Db,
    kept: &mut Option<DbConn>,
    batch: &[NewMessage],
    hooks: Option<&str>,
) -> Committed {
    let mut outcomes: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();
    let mut members = HashMap::new();
    let mut failure = None;
    let conn = match kept.take() {
        Some(mut conn) => {
            conn.start_operation();
            Ok(conn)
        }
        None => db.conn(Op::Persist).await,
    };
    match conn {
        Err(err) => failure = Some(err),
        Ok(mut conn) => {
            // Ranges still to store, the next one last.
            let mut pending = Vec::with_capacity(8);
            pending.push(0..batch.len());
            let mut retried = false;
            while let Some(range) = pending.pop() {
                match store(&mut conn, &batch[range.clone()], hooks).await {
                    Ok(done) => {
                        members.extend(done.members);
                        for (i, outcome) in range.zip(done.outcomes) {
                            outcomes[i] = Some(outcome);
                        }
                    }
                    Err(err) if is_input_error(&err) && range.len() > 1 => {
                        let mid = range.start + range.len() / 2;
                        pending.push(mid..range.end);
                        pending.push(range.start..mid);
                    }
                    // The same sender and client_msg_id were committed meanwhile by another
                    // worker; one more try finds that row and answers reuse or replay.
                    Err(err) if messages::is_duplicate_send(&err) && !retried => {
                        retried = true;
                        pending.push(range);
                    }
                    Err(err) if is_input_error(&err) => {
                        outcomes[range.start] = Some(Outcome::Rejected(messages::refusal(err)));
                    }
                    Err(err) => {
                        failure = Some(err.into());
                        break;
                    }
                }
            }
            if failure.is_none() {
                if conn.keepable() {
                    conn.finish_operation();
                    *kept = Some(conn);
                } else if let Err(err) = conn.done().await {
                    // Behind a pooler the batch is one transaction: none of it is stored.
                    outcomes.iter_mut().for_each(|o| *o = None);
                    members.clear();
                    failure = Some(err);
                }
            }
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|decided| {
            decided.unwrap_or_else(|| {
                Outcome::Failed(match &failure {
                    Some(AppError::Overloaded) => AppError::Overloaded,
                    _ => AppError::Unavailable,
                })
            })
        })
        .collect();
    if let Some(err) = failure {
        tracing::warn!(error = %err, sends = batch.len(), "group commit failed");
    }
    Committed { outcomes, members }
}

/// One statement for `batch`. Behind a pooler the halves of a split batch share one
/// transaction, so each runs in a savepoint: a half PostgreSQL refuses leaves the others.
async fn store(
    conn: &mut DbConn,
    batch: &[NewMessage],
    hooks: Option<&str>,
) -> Result<messages::Committed, sqlx::Error> {
    if conn.keepable() {
        return messages::store_batch(conn, batch, hooks).await;
    }
    let mut savepoint = sqlx::Connection::begin(&mut **conn).await?;
    match messages::store_batch(&mut savepoint, batch, hooks).await {
        Ok(done) => savepoint.commit().await.map(|()| done),
        Err(err) => {
            savepoint.rollback().await?;
            Err(err)
        }
    }
}

fn answer(registry: &Registry, reply: ReplyTo, outcome: Outcome, sent: &NewMessage) {
    match (reply, outcome) {
        (ReplyTo::Http(tx), Outcome::New(m)) => {
            let _ = tx.send(Ok(Persisted::New(m)));
        }
        (ReplyTo::Http(tx), Outcome::Replay(m)) => {
            let _ = tx.send(Ok(Persisted::Replay(m)));
        }
        (ReplyTo::Http(tx), Outcome::Rejected(e) | Outcome::Failed(e)) => {
            let _ = tx.send(Err(e));
        }
        (
            ReplyTo::Socket {
                user,
                conn,
                received,
            },
            outcome,
        ) => {
            let out = match outcome {
                Outcome::New(message) | Outcome::Replay(message) => Outbound {
                    kind: Kind::Reply {
                        since: Some(received),
                        acked: Some((message.chat_id, message.seq)),
                    },
                    frame: Arc::new(Encoded::new(ServerFrame::Ack {
                        client_msg_id: message.client_msg_id,
                        message,
                    })),
                },
                Outcome::Rejected(e) | Outcome::Failed(e) => reply_frame(ServerFrame::error(
                    e.code(),
                    e.to_string(),
                    Some(sent.client_msg_id.into()),
                )),
            };
            registry.deliver_to(user, conn, out);
        }
    }
}

/// Answers a send that was not stored: `overloaded` when the database was saturated,
/// `persist_failed` otherwise. Either way the client may send it again.
fn fail(registry: &Registry, reply: ReplyTo, message: &NewMessage, err: &AppError) {
    let code = match err {
        AppError::Overloaded => ErrorCode::Overloaded,
        _ => ErrorCode::PersistFailed,
    };
    metrics::counter!(m::PERSIST_FAILURES, "code" => code.as_str()).increment(1);
    match reply {
        ReplyTo::Http(tx) => {
            let _ = tx.send(Err(match err {
                AppError::Overloaded => AppError::Overloaded,
                _ => AppError::Unavailable,
            }));
        }
        ReplyTo::Socket { user, conn, .. } => {
            let frame = ServerFrame::error(
                code,
                "the message was not stored; it is safe to send it again",
                Some(message.client_msg_id.into()),
            );
            registry.deliver_to(user, conn, reply_frame(frame));
        }
    }
}

/// An error answering one of a socket's sends.
fn reply_frame(frame: ServerFrame) -> Outbound {
    Outbound {
        kind: Kind::Reply {
            since: None,
            acked: None,
        },
        frame: Arc::new(Encoded::new(frame)),
    }
}

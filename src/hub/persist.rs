//! Persist, then fan out. Sends are sharded by chat over a few workers; each worker takes every
//! send waiting in its queue (up to the batch size), stores them in one transaction (group
//! commit), and only after the commit acks the senders and queues the messages for every member.
//! One worker per chat means each chat's messages are committed and fanned out in seq order.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::registry::{Kind, Outbound, Registry};
use crate::db::messages::{self, Message, NewMessage, Outcome};
use crate::db::{Db, Op};
use crate::error::AppError;
use crate::ids::UserId;
use crate::metrics::{self as m, HubMetrics};
use crate::protocol::{Encoded, ServerFrame};

/// Where the answer to a send goes.
pub enum ReplyTo {
    /// A socket: the ack or error is queued to that connection, in order with its other frames.
    Socket {
        user: UserId,
        conn: u64,
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
    shards: Arc<[mpsc::Sender<SendRequest>]>,
}

impl Persister {
    pub fn start(
        db: Db,
        registry: Arc<Registry>,
        workers: usize,
        batch: usize,
        queue: usize,
        metrics: &HubMetrics,
    ) -> Self {
        let shards = (0..workers)
            .map(|_| {
                let (tx, rx) = mpsc::channel(queue);
                tokio::spawn(worker(
                    rx,
                    db.clone(),
                    registry.clone(),
                    batch,
                    metrics.clone(),
                ));
                tx
            })
            .collect();
        Self { shards }
    }

    /// Queues a send for its chat's worker; gives it back when that queue is full.
    pub fn submit(&self, request: SendRequest) -> Result<(), SendRequest> {
        let shard = request.message.chat.0.unsigned_abs() as usize % self.shards.len();
        self.shards[shard].try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
        })
    }
}

async fn worker(
    mut rx: mpsc::Receiver<SendRequest>,
    db: Db,
    registry: Arc<Registry>,
    batch_size: usize,
    metrics: HubMetrics,
) {
    let mut waiting = Vec::with_capacity(batch_size);
    while rx.recv_many(&mut waiting, batch_size).await > 0 {
        let (batch, replies): (Vec<NewMessage>, Vec<ReplyTo>) =
            waiting.drain(..).map(|r| (r.message, r.reply)).unzip();
        metrics.batch_size.record(batch.len() as f64);
        let started = Instant::now();
        let committed = match db.conn(Op::Persist).await {
            Ok(mut conn) => messages::store_batch(&mut conn, &batch)
                .await
                .map_err(AppError::from),
            Err(e) => Err(e),
        };
        let committed = match committed {
            Ok(committed) => committed,
            Err(err) => {
                tracing::warn!(error = %err, sends = batch.len(), "group commit failed");
                let code = match err {
                    AppError::Overloaded => "overloaded",
                    _ => "persist_failed",
                };
                metrics::counter!(m::PERSIST_FAILURES, "code" => code)
                    .increment(batch.len() as u64);
                for (message, reply) in batch.iter().zip(replies) {
                    fail(&registry, reply, code, message, &err);
                }
                continue;
            }
        };
        metrics.commit.record(started.elapsed());
        for ((outcome, reply), sent) in committed.outcomes.into_iter().zip(replies).zip(&batch) {
            match &outcome {
                Outcome::New(message) => {
                    metrics.persisted.increment(1);
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
                    let members = &committed.members[&message.chat_id];
                    metrics
                        .deliveries
                        .increment(registry.deliver(members, except, &out));
                    metrics.fanout.record(fanning.elapsed());
                }
                Outcome::Replay(_) => metrics.replays.increment(1),
                Outcome::Rejected(_) => {}
            }
            answer(&registry, reply, outcome, sent);
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
        (ReplyTo::Http(tx), Outcome::Rejected(e)) => {
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
            let (frame, since) = match outcome {
                Outcome::New(message) | Outcome::Replay(message) => (
                    ServerFrame::Ack {
                        client_msg_id: message.client_msg_id,
                        message,
                    },
                    Some(received),
                ),
                Outcome::Rejected(e) => (
                    ServerFrame::error(e.code(), e.to_string(), Some(sent.client_msg_id)),
                    None,
                ),
            };
            registry.deliver_to(user, conn, reply_frame(frame, since));
        }
    }
}

fn fail(registry: &Registry, reply: ReplyTo, code: &str, message: &NewMessage, err: &AppError) {
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
                Some(message.client_msg_id),
            );
            registry.deliver_to(user, conn, reply_frame(frame, None));
        }
    }
}

fn reply_frame(frame: ServerFrame, since: Option<Instant>) -> Outbound {
    Outbound {
        kind: Kind::Reply { since },
        frame: Arc::new(Encoded::new(frame)),
    }
}

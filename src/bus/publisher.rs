//! Sends events to the other nodes: a bounded queue drained by one task, which sends whatever
//! has gathered as one statement. Events are best effort across nodes (a full queue drops them,
//! counted); messages never travel here, they are announced by their commit.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Event, EVENTS};
use crate::db::{Db, Op};
use crate::ids::UserId;
use crate::metrics as m;
use crate::protocol::ServerFrame;

/// Events waiting to be sent; more are dropped.
const QUEUE: usize = 4096;
/// Most payloads sent in one statement.
const BATCH: usize = 256;

#[derive(Clone)]
pub struct Publisher {
    node: String,
    tx: mpsc::Sender<String>,
}

impl Publisher {
    /// Starts the sending task, which ends at `stop`.
    pub fn start(db: Db, node: String, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(db, rx, stop));
        Self { node, tx }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Queues `frame` for the sockets of `users` on the other nodes.
    pub fn publish(&self, users: &[UserId], frame: &ServerFrame) {
        for payload in Event::encode(&self.node, users, frame) {
            self.queue(payload);
        }
    }

    /// Queues this node's heartbeat, which its own listener expects to hear.
    pub fn heartbeat(&self) {
        self.queue(Event::heartbeat(&self.node));
    }

    fn queue(&self, payload: String) {
        if self.tx.try_send(payload).is_err() {
            metrics::counter!(m::BUS_DROPPED).increment(1);
        }
    }
}

async fn send_all(db: Db, mut rx: mpsc::Receiver<String>, stop: CancellationToken) {
    let mut payloads = Vec::with_capacity(BATCH);
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            got = rx.recv_many(&mut payloads, BATCH) => got,
        };
        if got == 0 {
            return;
        }
        let sent = async {
            let mut conn = db.conn(Op::Bus).await?;
            sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(EVENTS)
                .bind(&payloads)
                .execute(&mut *conn)
                .await?;
            Ok::<_, crate::error::AppError>(())
        };
        if let Err(e) = sent.await {
            tracing::warn!(error = %e, events = payloads.len(), "could not send events to other nodes");
            metrics::counter!(m::BUS_DROPPED).increment(payloads.len() as u64);
        }
        payloads.clear();
    }
}

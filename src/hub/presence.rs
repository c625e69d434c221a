//! Presence: this node's task keeps its rows of `presence` (see `db::presence`) in step with its
//! sockets and tells friends when someone comes online (a first socket anywhere) or goes
//! offline (the last one closed), on every node through the bus like any event. The registry
//! names a user whenever their first socket here opens or their last one closes; the task
//! reads the registry for the truth when it writes, so a burst of opens and closes costs one
//! statement. A lost name (a full queue) is found at the next tick, which also renews this
//! instance and sweeps those that went silent (crashed nodes), telling their users' friends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Hub;
use crate::db::presence::{self, Change};
use crate::db::Op;
use crate::error::AppResult;
use crate::ids::UserId;
use crate::protocol::ServerFrame;

/// How often the instance is renewed and its rows checked; well inside
/// [`presence::STALE_AFTER_SECS`].
const TICK: Duration = Duration::from_secs(10);
/// Users named and not yet written; more are dropped (the tick repairs them).
const QUEUE: usize = 4096;
/// Most users written in one statement.
const BATCH: usize = 1024;

impl Hub {
    /// Starts this node's presence task, until `stop`.
    pub fn start_presence(self: &Arc<Self>, stop: CancellationToken) {
        let (tx, rx) = mpsc::channel(QUEUE);
        if self.registry.follow_presence(tx) {
            tokio::spawn(run(self.clone(), rx, stop));
        }
    }

    /// Tells `change` to the friends of its user who may see it, here and on the other nodes.
    pub async fn tell_presence(&self, changes: Vec<Change>) -> AppResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let users: Vec<UserId> = changes.iter().map(|c| c.user_id).collect();
        let audiences = {
            let mut conn = self.db.conn(Op::Presence).await?;
            let audiences = presence::audiences(&mut conn, &users).await?;
            conn.done().await?;
            audiences
        };
        for c in changes {
            if let Some(friends) = audiences.get(&c.user_id) {
                let frame = ServerFrame::Presence {
                    user_id: c.user_id,
                    online: c.online,
                    last_seen_at: c.last_seen_at,
                };
                self.notify(friends, None, frame);
            }
        }
        Ok(())
    }
}

async fn run(hub: Arc<Hub>, mut named: mpsc::Receiver<UserId>, stop: CancellationToken) {
    let instance = Uuid::new_v4();
    let mut tick = tokio::time::interval(TICK);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let done = tokio::select! {
            _ = stop.cancelled() => return,
            got = named.recv_many(&mut batch, BATCH) => {
                if got == 0 {
                    return;
                }
                let users: HashSet<UserId> = batch.drain(..).collect();
                let (here, gone): (Vec<UserId>, Vec<UserId>) =
                    users.into_iter().partition(|u| hub.registry.has_user(*u));
                update(&hub, instance, &here, &gone).await
            }
            _ = tick.tick() => upkeep(&hub, instance).await,
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "presence could not be written; retrying at the next tick");
        }
    }
}

async fn update(hub: &Hub, instance: Uuid, here: &[UserId], gone: &[UserId]) -> AppResult<()> {
    let changes = {
        let mut conn = hub.db.conn(Op::Presence).await?;
        presence::beat(&mut conn, instance).await?;
        let changes = presence::apply(&mut conn, instance, here, gone).await?;
        conn.done().await?;
        changes
    };
    hub.tell_presence(changes).await
}

/// Renews the instance, writes what the rows missed, and sweeps silent instances.
async fn upkeep(hub: &Hub, instance: Uuid) -> AppResult<()> {
    let changes = {
        let mut conn = hub.db.conn(Op::Presence).await?;
        presence::beat(&mut conn, instance).await?;
        let here = hub.registry.online_users();
        let (missing, extra) = presence::drift(&mut conn, instance, &here).await?;
        let mut changes = if missing.is_empty() && extra.is_empty() {
            Vec::new()
        } else {
            presence::apply(&mut conn, instance, &missing, &extra).await?
        };
        changes.extend(presence::sweep(&mut conn).await?);
        conn.done().await?;
        changes
    };
    hub.tell_presence(changes).await
}

//! Commits in flight at once on this node. Every node stores into the same chats, and a commit
//! holds its chats' rows until it is flushed: the other nodes' commits to those chats wait for
//! it. So the persist workers are the cluster's, not each node's: a node alone commits with all
//! of them at once, and with others heard it takes its share (`workers / nodes`, rounded up),
//! so that the database sees about as many writers whatever the number of nodes. A worker
//! waiting for a slot keeps gathering sends, so its next commit carries more.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{interval, Duration, MissedTickBehavior};

use crate::bus::Peers;
use crate::metrics as m;

/// How often the share follows the nodes heard.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Slots {
    open: Arc<Semaphore>,
}

impl Slots {
    /// `workers` slots, shared with the nodes `peers` hears while it hears them.
    pub fn start(workers: usize, peers: Option<Arc<Peers>>) -> Self {
        let open = Arc::new(Semaphore::new(workers));
        metrics::gauge!(m::PERSIST_SLOTS).set(workers as f64);
        if let Some(peers) = peers {
            tokio::spawn(follow(open.clone(), workers, peers));
        }
        Self { open }
    }

    /// A slot if one is open now.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.open.clone().try_acquire_owned().ok()
    }

    /// Waits for a slot; the commit holds it until it is dropped.
    pub async fn take(&self) -> OwnedSemaphorePermit {
        self.open
            .clone()
            .acquire_owned()
            .await
            .expect("the slots are never closed")
    }
}

/// This node's share of `workers` when `nodes` nodes commit.
pub fn share(workers: usize, nodes: usize) -> usize {
    workers.div_ceil(nodes.max(1)).max(1)
}

/// Keeps the open slots at this node's share by holding the rest back, one permit each.
async fn follow(open: Arc<Semaphore>, workers: usize, peers: Arc<Peers>) {
    let mut held: Vec<OwnedSemaphorePermit> = Vec::new();
    let mut tick = interval(FOLLOW_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let target = share(workers, 1 + peers.nodes_heard());
        while workers - held.len() > target {
            // Waits for a commit in flight to end; new ones queue behind it (the semaphore is
            // fair), which is the point.
            let Ok(permit) = open.clone().acquire_owned().await else {
                return;
            };
            held.push(permit);
        }
        while workers - held.len() < target {
            held.pop();
        }
        metrics::gauge!(m::PERSIST_SLOTS).set((workers - held.len()) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn each_node_takes_its_share_of_the_workers_rounded_up_and_never_none() {
        assert_eq!(share(4, 1), 4);
        assert_eq!(share(4, 2), 2);
        assert_eq!(share(4, 3), 2);
        assert_eq!(share(4, 4), 1);
        assert_eq!(share(4, 9), 1);
        assert_eq!(share(1, 0), 1);
    }
}

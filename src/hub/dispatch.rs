//! Gathers the node's sends for the persist workers. Every send goes into one queue; the
//! dispatcher hands a free worker, once it holds a commit slot, one batch of the sends waiting,
//! leaving out the chats whose commit is still in flight. So each chat's sends are committed and
//! fanned out one commit at a time, in order, while other chats' commits run beside them, and a
//! commit carries sends from every chat, not from a quarter of them.
//!
//! With a linger, a send waits that long for company before its commit starts (unless a batch
//! fills first): at moderate rates a commit then carries several messages, and the node wakes,
//! writes to PostgreSQL and reads its answer once for all of them, not once for each. With other
//! nodes too: once no commit stalled on the search index, a commit holding more chats no longer
//! made the other node's wait for long (docs/scaling.md, eighth round).

use std::collections::{HashSet, VecDeque};

use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::{sleep_until, Duration, Instant};

use super::persist::SendRequest;
use super::slots::Slots;
use crate::ids::ChatId;

/// One commit's sends, with the slot it holds until its fan-out is done.
pub struct Batch {
    pub requests: Vec<SendRequest>,
    pub slot: OwnedSemaphorePermit,
}

/// A worker's word that its batch is committed and fanned out: it is free again, and so are
/// the batch's chats.
pub struct Done {
    pub worker: usize,
    pub chats: Vec<ChatId>,
}

pub struct Dispatcher {
    pub sends: mpsc::Receiver<SendRequest>,
    pub workers: Vec<mpsc::Sender<Batch>>,
    pub done: mpsc::Receiver<Done>,
    pub slots: Slots,
    pub batch_size: usize,
    pub linger: Duration,
    /// Most sends taken off the queue and waiting here.
    pub hold: usize,
}

impl Dispatcher {
    /// Runs until the queue is closed and every send taken from it was handed out.
    pub async fn run(mut self) {
        // Each waiting send with the time its commit is due.
        let mut waiting: VecDeque<(Instant, SendRequest)> = VecDeque::new();
        let mut idle: Vec<usize> = (0..self.workers.len()).rev().collect();
        let mut busy: HashSet<ChatId> = HashSet::new();
        let mut slot: Option<OwnedSemaphorePermit> = None;
        let mut incoming = Vec::with_capacity(self.batch_size);
        let mut closed = false;
        // Every waiting send's chat is in a commit: nothing can be handed out until a commit
        // is done or a send for another chat comes. Looking again at each send that came
        // meanwhile cost a pass over all the waiting ones per send (7% of the node's CPU at
        // 10,000 msg/s).
        let mut stuck = false;
        loop {
            // Hand out batches while a worker is free, a slot open, and sends have waited long
            // enough (or fill a batch).
            while let (Some(&worker), Some(due)) = (idle.last(), next_due(&waiting)) {
                if stuck || (waiting.len() < self.batch_size && Instant::now() < due && !closed) {
                    break;
                }
                let Some(permit) = slot.take().or_else(|| self.slots.try_take()) else {
                    break;
                };
                let requests = take_batch(&mut waiting, &mut busy, self.batch_size);
                if requests.is_empty() {
                    stuck = true;
                    slot = Some(permit);
                    break;
                }
                idle.pop();
                let batch = Batch {
                    requests,
                    slot: permit,
                };
                if self.workers[worker].try_send(batch).is_err() {
                    // A free worker's channel is empty; it is gone only when the node stops.
                    return;
                }
            }
            if closed && waiting.is_empty() {
                return;
            }
            let ready = !idle.is_empty() && !waiting.is_empty() && !stuck;
            let due = next_due(&waiting);
            let lingering = ready && due.is_some_and(|d| Instant::now() < d);
            let room = self.hold.saturating_sub(waiting.len()).min(self.batch_size);
            tokio::select! {
                Some(done) = self.done.recv() => {
                    idle.push(done.worker);
                    for chat in done.chats {
                        busy.remove(&chat);
                    }
                    stuck = false;
                }
                received = self.sends.recv_many(&mut incoming, room), if !closed && room > 0 => {
                    if received == 0 {
                        closed = true;
                    }
                    let due = Instant::now() + self.linger;
                    stuck &= incoming.iter().all(|r| busy.contains(&r.message.chat));
                    waiting.extend(incoming.drain(..).map(|r| (due, r)));
                }
                permit = self.slots.take(), if ready && !lingering && slot.is_none() => {
                    slot = Some(permit);
                }
                () = sleep_until(due.unwrap_or_else(Instant::now)), if lingering => {}
            }
        }
    }
}

/// When the first of the `waiting` sends is due: the oldest's time.
fn next_due(waiting: &VecDeque<(Instant, SendRequest)>) -> Option<Instant> {
    waiting.front().map(|(due, _)| *due)
}

/// Takes up to `max` of the `waiting` sends whose chats no commit in flight holds, in order,
/// and marks their chats busy; the rest keep their order.
fn take_batch(
    waiting: &mut VecDeque<(Instant, SendRequest)>,
    busy: &mut HashSet<ChatId>,
    max: usize,
) -> Vec<SendRequest> {
    let mut batch = Vec::with_capacity(max.min(waiting.len()));
    let mut taken = Vec::new();
    // Only the sends passed over move twice; the rest stay where they are.
    let mut passed = Vec::new();
    while let Some((since, request)) = waiting.pop_front() {
        let chat = request.message.chat;
        if busy.contains(&chat) {
            passed.push((since, request));
            continue;
        }
        taken.push(chat);
        batch.push(request);
        if batch.len() == max {
            break;
        }
    }
    for send in passed.into_iter().rev() {
        waiting.push_front(send);
    }
    busy.extend(taken);
    batch
}

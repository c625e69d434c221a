//! The `reconnect` scenario's client: it drops its socket every few seconds while traffic flows,
//! reconnects, sends one `resume` with the last seq it has of each chat, and resends every send
//! it has no answer for (same client_msg_id). It keeps no reorder buffer: frames are recorded in
//! the order they arrive, so the exactness check (every message once, in seq order, nothing
//! lost) checks the server's raw stream.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec, ServerFrame};

use crate::cli::Args;
use crate::client::{codec, connect, intended, ConnResult, Live};
use crate::schedule::{body, Schedule};

struct Client {
    codec: Codec,
    warmup_us: u64,
    live: Arc<Live>,
    r: ConnResult,
    /// Sends without an answer yet, to resend after a reconnect.
    pending: HashMap<Uuid, ClientFrame>,
    answered: HashSet<Uuid>,
    last_seen: HashMap<i64, i64>,
}

impl Client {
    /// Records a message as it arrived. An ack for a message this client already has (a
    /// resend whose message came back in the resumed stream) is no delivery.
    fn saw(&mut self, chat: i64, seq: i64, at: Option<u64>, now_us: u64, ack: bool) {
        let last = self.last_seen.entry(chat).or_insert(0);
        // An ack for a message this client already has (it came back by sync) is no delivery.
        if ack && seq <= *last {
            return;
        }
        *last = (*last).max(seq);
        self.r.log.seen.entry(chat).or_default().push(seq);
        if !ack {
            self.r.delivery(at, now_us, self.warmup_us);
        }
    }

    fn on_frame(&mut self, frame: ServerFrame) {
        let now_us = self.live.start.elapsed().as_micros() as u64;
        match frame {
            ServerFrame::Ack {
                client_msg_id,
                message,
            } => {
                if self.pending.remove(&client_msg_id).is_some()
                    && self.answered.insert(client_msg_id)
                {
                    let at = intended(&message.body);
                    self.r.ack(
                        &self.live,
                        message.chat_id.0,
                        message.seq,
                        at,
                        now_us,
                        self.warmup_us,
                    );
                }
                self.saw(message.chat_id.0, message.seq, None, now_us, true);
            }
            ServerFrame::Message { message } => {
                let at = intended(&message.body);
                self.saw(
                    message.chat_id.0,
                    message.seq,
                    at.or(Some(0)),
                    now_us,
                    false,
                );
            }
            ServerFrame::Error {
                code, reference, ..
            } => {
                if let Some(id) = reference.and_then(|r| r.send_id()) {
                    if self.pending.remove(&id).is_some() && self.answered.insert(id) {
                        self.live.outstanding.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                *self.r.errors.entry(code.to_string()).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// Client `slot`: its first socket goes to node `slot` among `--targets`, each reconnect to the
/// next one.
pub async fn client(
    args: Args,
    mut slot: usize,
    chats: Vec<i64>,
    token: String,
    rate: f64,
    live: Arc<Live>,
    stop: CancellationToken,
) -> ConnResult {
    let mut c = Client {
        codec: codec(args.codec),
        warmup_us: args.warmup().as_micros() as u64,
        live: live.clone(),
        r: ConnResult::new(chats.clone()),
        pending: HashMap::new(),
        answered: HashSet::new(),
        last_seen: HashMap::new(),
    };
    let mut schedule =
        (rate > 0.0 && !chats.is_empty()).then(|| Schedule::new(rate, args.arrival, args.total()));
    let mut next_send = schedule.as_mut().and_then(Iterator::next);
    'sockets: loop {
        if stop.is_cancelled() {
            return c.r;
        }
        let connected = connect(&args, slot, &token).await;
        slot += 1;
        let Ok(ws) = connected else {
            *c.r.errors.entry("reconnect_failed".into()).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut sink, mut stream) = ws.split();
        // Resume every chat from what we have in one frame, then resend what is unanswered.
        let positions = chats
            .iter()
            .map(|&chat| (ChatId(chat), c.last_seen.get(&chat).copied().unwrap_or(0)))
            .collect();
        let mut resume = vec![ClientFrame::Resume {
            epoch: None,
            positions,
            reference: None,
        }];
        resume.extend(c.pending.values().cloned());
        for frame in &resume {
            if sink.send(c.codec.encode(frame)).await.is_err() {
                continue 'sockets;
            }
        }
        let drop_at = Instant::now()
            + Duration::from_secs_f64(
                args.reconnect_every * rand::thread_rng().gen_range(0.5..1.5),
            );
        loop {
            let send_at = next_send.map(|at| live.start + Duration::from_secs_f64(at));
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = sink.close().await;
                    return c.r;
                }
                _ = tokio::time::sleep_until(drop_at), if live.start.elapsed() < args.total() => {
                    // Drop the socket without a goodbye, as a lost network would.
                    continue 'sockets;
                }
                _ = tokio::time::sleep_until(send_at.unwrap_or(drop_at)), if send_at.is_some() => {
                    let at = next_send.expect("scheduled");
                    let chat = chats[rand::thread_rng().gen_range(0..chats.len())];
                    let id = Uuid::new_v4();
                    let frame = ClientFrame::Send { chat_id: ChatId(chat), client_msg_id: id, body: body(at, args.body_bytes), reply_to: None, attachments: Vec::new() };
                    c.pending.insert(id, frame.clone());
                    live.outstanding.fetch_add(1, Ordering::Relaxed);
                    c.r.sent += 1;
                    next_send = schedule.as_mut().and_then(Iterator::next);
                    if sink.send(c.codec.encode(&frame)).await.is_err() {
                        continue 'sockets;
                    }
                }
                msg = stream.next() => match msg {
                    Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => match Codec::decode::<ServerFrame>(&m) {
                        Ok(frame) => c.on_frame(frame),
                        Err(_) => *c.r.errors.entry("undecodable".into()).or_default() += 1,
                    },
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => continue 'sockets,
                },
            }
        }
    }
}

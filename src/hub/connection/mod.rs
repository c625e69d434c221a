//! One task per socket. It reads client frames, writes its queue, pings, and keeps the
//! per-connection promises: each chat's messages in seq order and never twice, a sync that races
//! live traffic loses nothing, and a shutdown closes only after every in-flight send is answered.

mod frames;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use super::registry::{ConnInbox, Kick, Kind, Outbound};
use super::Hub;
use crate::auth::Session;
use crate::ids::{ChatId, UserId};
use crate::metrics::{self as m, reason};
use crate::protocol::{close, ClientFrame, Codec, ServerFrame};

pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// A socket's own limit on typing indicators, apart from the user's budget.
type Typing = governor::DefaultDirectRateLimiter;

/// Messages of one chat already written to this socket: the seqs `lo..=hi`.
#[derive(Clone, Copy)]
struct Written {
    lo: i64,
    hi: i64,
}

/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;

pub struct Connection {
    hub: Arc<Hub>,
    user: UserId,
    /// The token the socket authenticated with: it closes when that token expires.
    session: Session,
    codec: Codec,
    socket: Socket,
    inbox: ConnInbox,
    typing: Typing,
    written: HashMap<ChatId, Written>,
    /// Sends handed to the persister and not yet answered.
    in_flight: usize,
}

/// How a connection ended: the close frame to send, if any, and the `reason` label.
enum End {
    Close(u16, &'static str, &'static str),
    Gone(&'static str),
}

impl Connection {
    pub fn new(
        hub: Arc<Hub>,
        session: Session,
        codec: Codec,
        socket: Socket,
        inbox: ConnInbox,
    ) -> Self {
        let typing = crate::throttle::per_socket(hub.ws.typing_rate);
        Self {
            hub,
            user: session.user,
            session,
            codec,
            socket,
            inbox,
            typing,
            written: HashMap::new(),
            in_flight: 0,
        }
    }

    pub async fn run(mut self) {
        // A panic here is a bug, never client input; it closes this socket with 1011 and
        // releases its registry slot instead of leaking them with the task.
        let end = match AssertUnwindSafe(self.serve()).catch_unwind().await {
            Ok(end) => end,
            Err(_) => {
                tracing::error!("connection task panicked; socket closed");
                metrics::counter!(m::WS_PANICS).increment(1);
                End::Close(close::INTERNAL, "internal error", reason::ERROR)
            }
        };
        let label = match end {
            End::Close(_, _, label) | End::Gone(label) => label,
        };
        metrics::counter!(m::WS_DISCONNECTS, "reason" => label).increment(1);
        if let End::Close(code, reason, _) = end {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            // A slow consumer may never read its close frame; do not wait on it for long.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                self.socket.close(Some(frame)),
            )
            .await;
        }
        self.hub
            .registry
            .unregister(self.user, self.inbox.ip, self.inbox.id);
    }

    async fn serve(&mut self) -> End {
        let mut ping = interval(self.hub.ws.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        let mut awaiting_pong: Option<Instant> = None;
        let mut draining = false;
        let shutdown = self.hub.shutdown.clone();
        let kick = self.inbox.kick.clone();
        let expiry = tokio::time::sleep(self.session.remaining());
        tokio::pin!(expiry);
        loop {
            if draining && self.in_flight == 0 && self.inbox.rx.is_empty() {
                return End::Close(close::GOING_AWAY, "server shutting down", reason::SHUTDOWN);
            }
            tokio::select! {
                biased;
                _ = kick.cancelled() => return self.kicked(),
                _ = shutdown.cancelled(), if !draining => draining = true,
                _ = &mut expiry => {
                    return End::Close(close::TOKEN_EXPIRED, "token expired", reason::TOKEN_EXPIRED);
                }
                out = self.inbox.rx.recv() => match out {
                    Some(out) => if !self.write_queued(out).await { return self.kicked() },
                    None => return End::Gone(reason::ERROR),
                },
                incoming = self.socket.next(), if !draining => match incoming {
                    Some(Ok(msg)) => {
                        if let Some(end) = self.on_message(msg, &mut awaiting_pong).await {
                            return end;
                        }
                    }
                    Some(Err(WsError::Capacity(_))) => {
                        return End::Close(close::TOO_BIG, "frame too large", reason::ERROR);
                    }
                    Some(Err(_)) => return End::Gone(reason::ERROR),
                    None => return End::Gone(reason::NORMAL),
                },
                _ = ping.tick() => {
                    if let Some(sent) = awaiting_pong {
                        if sent.elapsed() >= self.hub.ws.pong_timeout {
                            return End::Close(close::POLICY, close::HEARTBEAT, reason::HEARTBEAT);
                        }
                    } else {
                        awaiting_pong = Some(Instant::now());
                        if !self.write(WsMessage::Ping(Default::default())).await {
                            return self.kicked();
                        }
                    }
                }
            }
        }
    }

    fn kicked(&self) -> End {
        match self.inbox.why.get() {
            Kick::SlowConsumer => {
                End::Close(close::POLICY, close::SLOW_CONSUMER, reason::SLOW_CONSUMER)
            }
            Kick::Revoked => End::Close(close::TOKEN_REVOKED, "token revoked", reason::REVOKED),
            Kick::None => End::Gone(reason::ERROR),
        }
    }

    /// Writes one frame, giving up if the connection is cut off meanwhile. False when the
    /// socket is no longer usable.
    async fn write(&mut self, msg: WsMessage) -> bool {
        tokio::select! {
            biased;
            _ = self.inbox.kick.cancelled() => false,
            sent = self.socket.send(msg) => sent.is_ok(),
        }
    }

    async fn reply(&mut self, frame: ServerFrame) -> bool {
        self.count_out(&frame);
        let msg = self.codec.encode(&frame);
        self.write(msg).await
    }

    fn count_out(&self, frame: &ServerFrame) {
        self.hub.metrics.frame_out(frame.kind());
        if let ServerFrame::Error { code, .. } = frame {
            metrics::counter!(m::WS_ERROR_FRAMES, "code" => code.clone()).increment(1);
        }
    }

    /// Does the bookkeeping for a queued frame; None when this socket already has it.
    fn prepare(&mut self, out: Outbound) -> Option<WsMessage> {
        match out.kind {
            Kind::Message { chat, seq } => match self.written.get_mut(&chat) {
                Some(w) if (w.lo..=w.hi).contains(&seq) => return None,
                Some(w) if w.hi.checked_add(1) == Some(seq) => w.hi = seq,
                _ => {
                    self.written.insert(chat, Written { lo: seq, hi: seq });
                }
            },
            Kind::Reply { since } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if let Some(since) = since {
                    self.hub.metrics.ack_latency.record(since.elapsed());
                }
            }
            Kind::Event => {}
        }
        self.hub
            .metrics
            .queue_depth
            .record(self.inbox.rx.len() as f64);
        self.count_out(&out.frame.frame);
        Some(out.frame.message(self.codec))
    }

    /// Writes a queued frame and what else is already waiting (up to a batch) with one flush,
    /// so a busy socket costs one write call per batch rather than per frame.
    async fn write_queued(&mut self, first: Outbound) -> bool {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(out) = next.take() {
            if let Some(msg) = self.prepare(out) {
                let fed = tokio::select! {
                    biased;
                    _ = self.inbox.kick.cancelled() => false,
                    fed = self.socket.feed(msg) => fed.is_ok(),
                };
                if !fed {
                    return false;
                }
            }
            written += 1;
            if written < WRITE_BATCH {
                next = self.inbox.rx.try_recv().ok();
            }
        }
        tokio::select! {
            biased;
            _ = self.inbox.kick.cancelled() => false,
            flushed = self.socket.flush() => flushed.is_ok(),
        }
    }

    async fn on_message(
        &mut self,
        msg: WsMessage,
        awaiting_pong: &mut Option<Instant>,
    ) -> Option<End> {
        match msg {
            WsMessage::Text(_) | WsMessage::Binary(_) => {}
            WsMessage::Pong(_) => {
                *awaiting_pong = None;
                return None;
            }
            // tungstenite queued the pong; flushing sends it.
            WsMessage::Ping(_) => {
                return (self.socket.flush().await.is_err()).then_some(End::Gone(reason::ERROR))
            }
            WsMessage::Close(_) => return Some(End::Gone(reason::NORMAL)),
            WsMessage::Frame(_) => return None,
        }
        let frame = match Codec::decode::<ClientFrame>(&msg) {
            Ok(frame) => {
                metrics::counter!(m::WS_FRAMES_IN, "type" => frame.kind()).increment(1);
                frame
            }
            Err(e) => {
                metrics::counter!(m::WS_FRAMES_IN, "type" => "bad_frame").increment(1);
                let reference = Codec::decode::<serde_json::Value>(&msg)
                    .ok()
                    .and_then(|v| v.get("client_msg_id")?.as_str()?.parse::<Uuid>().ok());
                let frame =
                    ServerFrame::error("bad_frame", format!("unreadable frame: {e}"), reference);
                return (!self.reply(frame).await).then_some(End::Gone(reason::ERROR));
            }
        };
        let answer = self.on_frame(frame).await;
        match answer {
            Some(frame) => (!self.reply(frame).await).then_some(End::Gone(reason::ERROR)),
            None => None,
        }
    }
}

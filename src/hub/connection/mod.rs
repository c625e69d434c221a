//! One task per socket. It reads client frames, writes its queue, pings, and keeps the
//! per-connection promises: each chat's messages in seq order, each once, with no gap (see
//! [`stream`]); a slow reader is caught up from the database, not cut off; a shutdown closes
//! only after every in-flight send is answered; and every close is a WebSocket closing
//! handshake with a code from [`close`].

mod amend;
mod fetch;
mod frames;
mod reorder;
mod stream;
mod sync;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use super::registry::{ConnInbox, Kick};
use super::Hub;
use crate::auth::Session;
use crate::ids::{ChatId, UserId};
use crate::metrics::{self as m, reason};
use crate::protocol::{close, ClientFrame, Codec, Encoded, ErrorCode, Ref, ServerFrame};
use fetch::Work;

pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

pub struct Connection {
    hub: Arc<Hub>,
    user: UserId,
    /// The token the socket authenticated with: it closes when that token expires.
    session: Session,
    codec: Codec,
    socket: Socket,
    inbox: ConnInbox,
    /// Per chat, the last seq written to this socket.
    cursors: HashMap<ChatId, i64>,
    /// Sends handed to the persister and not yet answered, by client_msg_id: the chat and a
    /// count (a client may resend one before its answer). Their messages reach this socket as
    /// acks.
    in_flight: HashMap<Uuid, (ChatId, u32)>,
    /// Sends whose ack was written in their message's place before the persister's came.
    acked_early: HashSet<Uuid>,
    /// Acks held back until the messages before them are read from the database, which
    /// writes each in its message's place: the chat and seq, and the frame.
    held_acks: HashMap<Uuid, (ChatId, i64, Arc<Encoded>)>,
    /// What is still to be read from the database, and the read in flight.
    work: Work,
    /// Frames beyond their chat's cursor, waiting a moment for the gap to fill live.
    reorder: reorder::Reorder,
    /// Chats this socket heard `chat_removed` for: nothing more of them is written.
    removed: HashSet<ChatId>,
    /// Until the client's first frame (or [`GREETING`] at most), live messages of chats
    /// without a cursor are held, so that a `resume` or `sync` sent first starts the stream
    /// exactly where the client asked.
    greeting_until: Option<Instant>,
    /// Per chat, the first and last seq held back during the greeting.
    held: HashMap<ChatId, (i64, i64)>,
    /// After a frame was refused for the user's budget, the socket reads nothing more until
    /// the budget could pay again: a client that sends faster than it may is read at the rate
    /// it may send, and TCP pushes back on it, instead of the server reading (and paying for)
    /// every frame only to refuse it.
    read_paused_until: Option<Instant>,
}

/// The longest a new socket holds live messages waiting for the client's first frame.
const GREETING: Duration = Duration::from_secs(1);

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
        Self {
            hub,
            user: session.user,
            session,
            codec,
            socket,
            inbox,
            cursors: HashMap::new(),
            in_flight: HashMap::new(),
            acked_early: HashSet::new(),
            held_acks: HashMap::new(),
            work: Work::default(),
            reorder: reorder::Reorder::default(),
            removed: HashSet::new(),
            greeting_until: Some(Instant::now() + GREETING),
            held: HashMap::new(),
            read_paused_until: None,
        }
    }

    pub async fn run(mut self: Box<Self>) {
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
        // The socket leaves the registry (and frees its slot) before the closing handshake,
        // which may take a moment with a client that is slow to answer.
        self.hub
            .registry
            .unregister(self.user, self.inbox.ip, self.inbox.id);
        if let End::Close(code, reason, _) = end {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            // Our Close, then the client's answer, then the TCP close (RFC 6455 5.5.1). A
            // stalled client may never read ours: neither step waits for long. One closed as
            // stalled gets longer, so that a client that reads again finds the frames still
            // buffered and then the 4004, not a reset.
            let patience = if code == close::STALLED {
                STALLED_CLOSING
            } else {
                CLOSING
            };
            let _ = tokio::time::timeout(patience, self.socket.close(Some(frame))).await;
            self.await_close(patience).await;
        }
    }

    async fn serve(&mut self) -> End {
        match self.serve_until_end().await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn serve_until_end(&mut self) -> Result<std::convert::Infallible, End> {
        let mut ping = interval(self.hub.ws.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        let mut awaiting_pong: Option<Instant> = None;
        let mut draining = false;
        let shutdown = self.hub.shutdown.clone();
        let kick = self.inbox.kick.clone();
        let backlog = self.inbox.backlog.clone();
        let expiry = tokio::time::sleep(self.session.remaining());
        // Made once, not on every turn of the loop: each made anew registered with and left
        // its token's or backlog's waiters on every frame in and out.
        let kicked = kick.cancelled();
        let stopping = shutdown.cancelled();
        let fell_behind = backlog.fell_behind();
        tokio::pin!(expiry, kicked, stopping, fell_behind);
        // First of all, the epoch that every seq on this socket belongs to.
        let hello = ServerFrame::Hello {
            epoch: self.hub.epoch(),
        };
        self.count_out(&hello);
        self.feed(self.codec.encode(&hello)).await?;
        self.flush().await?;
        // The greeting counts from the `hello` the client answers, not from the upgrade.
        if self.greeting_until.is_some() {
            self.greeting_until = Some(Instant::now() + GREETING);
        }
        loop {
            if draining && self.in_flight.is_empty() && self.inbox.rx.is_empty() {
                return Err(End::Close(
                    close::GOING_AWAY,
                    "server shutting down",
                    reason::SHUTDOWN,
                ));
            }
            // Whatever happened last, the next database read starts here if one is due: no work
            // waits for a client frame or a new message to wake it. A gap that did not fill
            // live in time becomes such a read first.
            self.settle_early();
            self.schedule();
            let (retry_at, greeting_until) = (self.work.retry_at, self.greeting_until);
            let gap_until = self.reorder.deadline();
            let paused_until = self.read_paused_until;
            tokio::select! {
                biased;
                () = &mut kicked => return Err(self.kicked()),
                () = &mut stopping, if !draining => draining = true,
                _ = &mut expiry => {
                    return Err(End::Close(close::TOKEN_EXPIRED, "token expired", reason::TOKEN_EXPIRED));
                }
                fetched = fetch::finished(&mut self.work.reading) => self.on_fetched(fetched).await?,
                out = self.inbox.rx.recv() => match out {
                    Some(out) => self.drain(out).await?,
                    None => return Err(End::Gone(reason::ERROR)),
                },
                () = &mut fell_behind => fell_behind.set(backlog.fell_behind()),
                _ = sleep_until_some(retry_at) => {}
                _ = sleep_until_some(gap_until) => {}
                _ = sleep_until_some(paused_until) => self.read_paused_until = None,
                incoming = self.socket.next(), if !draining && paused_until.is_none() => match incoming {
                    Some(Ok(msg)) => self.on_message(msg, &mut awaiting_pong).await?,
                    Some(Err(e)) => return Err(read_failed(e)),
                    None => return Err(End::Gone(reason::NORMAL)),
                },
                // After the socket's read: a first frame that is already here when the greeting
                // runs out (a busy server comes to this socket late) still says where to start.
                _ = sleep_until_some(greeting_until) => self.end_greeting(),
                _ = ping.tick() => {
                    if let Some(sent) = awaiting_pong {
                        if sent.elapsed() >= self.hub.ws.pong_timeout {
                            return Err(End::Close(close::HEARTBEAT, "heartbeat timeout", reason::HEARTBEAT));
                        }
                    } else {
                        awaiting_pong = Some(Instant::now());
                        self.feed(WsMessage::Ping(Default::default())).await?;
                        self.flush().await?;
                    }
                }
            }
        }
    }

    fn kicked(&self) -> End {
        match self.inbox.why.get() {
            Kick::Stalled => End::Close(
                close::STALLED,
                "stalled: the client read nothing",
                reason::STALLED,
            ),
            Kick::Revoked => End::Close(close::TOKEN_REVOKED, "token revoked", reason::REVOKED),
            Kick::Rewound => End::Close(close::HISTORY_REWOUND, "history rewound", reason::REWOUND),
            Kick::None => End::Gone(reason::ERROR),
        }
    }

    /// After our Close: reads until the client's Close (or the end of the stream), briefly.
    async fn await_close(&mut self, patience: Duration) {
        let _ = tokio::time::timeout(patience, async {
            while let Some(Ok(msg)) = self.socket.next().await {
                if msg.is_close() {
                    break;
                }
            }
        })
        .await;
    }

    async fn on_message(
        &mut self,
        msg: WsMessage,
        awaiting_pong: &mut Option<Instant>,
    ) -> Result<(), End> {
        match msg {
            WsMessage::Text(_) | WsMessage::Binary(_) => {}
            WsMessage::Pong(_) => {
                *awaiting_pong = None;
                return Ok(());
            }
            // tungstenite queued the pong; flushing sends it.
            WsMessage::Ping(_) => return self.flush().await,
            // tungstenite queued the answering Close (echoing the code); flushing sends it, and
            // then the TCP connection may end.
            WsMessage::Close(_) => {
                let _ = tokio::time::timeout(CLOSING, self.socket.flush()).await;
                return Err(End::Gone(reason::NORMAL));
            }
            WsMessage::Frame(_) => return Ok(()),
        }
        let frame = match Codec::decode::<ClientFrame>(&msg) {
            Ok(frame) => {
                metrics::counter!(m::WS_FRAMES_IN, "type" => frame.kind()).increment(1);
                frame
            }
            Err(e) => {
                metrics::counter!(m::WS_FRAMES_IN, "type" => "bad_frame").increment(1);
                // An unreadable frame costs from the user's budget like any other, before a
                // second look for its ref.
                let frame = match self.budget("bad_frame", frame_units(&msg)) {
                    Err(limited) => frames::error_frame(&limited, None),
                    Ok(()) => ServerFrame::error(
                        ErrorCode::BadFrame,
                        format!("unreadable frame: {e}"),
                        unreadable_frame_ref(&msg),
                    ),
                };
                return self.reply(frame).await;
            }
        };
        if let Some(frame) = self.on_frame(frame, frame_units(&msg)).await? {
            self.reply(frame).await?;
        }
        self.end_greeting();
        Ok(())
    }
}

/// What a frame without a cost of its own (a ping, an unreadable frame) takes from the user's
/// budget: one unit, and one more per 4 KiB, so large frames cannot be sent for free.
fn frame_units(msg: &WsMessage) -> u32 {
    1 + (msg.len() / 4096) as u32
}

/// The reference of a frame that could not be read as a whole: its `ref`, or a send's
/// `client_msg_id`, when those fields can be read (a string of at most [`Ref::MAX_BYTES`]).
fn unreadable_frame_ref(msg: &WsMessage) -> Option<Ref> {
    let value = Codec::decode::<serde_json::Value>(msg).ok()?;
    if let Some(reference) = value.get("ref") {
        let reference = serde_json::from_value::<Ref>(reference.clone()).ok()?;
        return (!reference.is_too_long()).then_some(reference);
    }
    // A send's reference is its client_msg_id, as given even when it is no UUID.
    let id = value.get("client_msg_id")?.as_str()?;
    let reference = Ref::Text(id.to_owned());
    (!reference.is_too_long()).then_some(reference)
}

/// How long each step of a closing handshake may take.
const CLOSING: Duration = Duration::from_secs(1);

/// How long each step may take for a socket closed as stalled. Its registry slot is free
/// already; only its buffers wait.
const STALLED_CLOSING: Duration = Duration::from_secs(10);

/// The end for a read error: violations of the WebSocket protocol close with the code RFC 6455
/// gives them; a broken connection just ends.
fn read_failed(e: WsError) -> End {
    match e {
        WsError::Capacity(_) => End::Close(close::TOO_BIG, "frame too large", reason::ERROR),
        WsError::Protocol(_) => End::Close(close::PROTOCOL, "protocol error", reason::ERROR),
        WsError::Utf8 => End::Close(close::INVALID_DATA, "invalid UTF-8", reason::ERROR),
        _ => End::Gone(reason::ERROR),
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

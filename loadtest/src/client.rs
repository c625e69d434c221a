//! What every harness client shares: connecting, the codec, the counters all connections feed,
//! and what one connection measured. The scenarios build on it; it builds on none of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use xfchat::protocol::Codec;

use crate::cli::{Args, CodecArg};
use crate::figures::histogram;
use crate::verify::ConnLog;

/// Counters shared by every connection, read by the progress bar and the coordinator.
pub struct Live {
    pub start: Instant,
    pub acked: AtomicU64,
    /// `message` frames received.
    pub delivered: AtomicU64,
    pub outstanding: AtomicI64,
    /// Deliveries the acks so far promise to connected members, less those received (it may
    /// dip below zero while a delivery overtakes its ack).
    pub undelivered: AtomicI64,
    pub ack_us: Mutex<Histogram<u64>>,
}

impl Live {
    pub fn new(start: Instant) -> Self {
        Live {
            start,
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            outstanding: AtomicI64::new(0),
            undelivered: AtomicI64::new(0),
            ack_us: Mutex::new(histogram()),
        }
    }
}

/// What one connection measured and saw.
pub struct ConnResult {
    pub log: ConnLog,
    pub acked: Vec<(i64, i64)>,
    pub ack_us: Histogram<u64>,
    pub delivery_us: Histogram<u64>,
    pub acks_measured: u64,
    pub deliveries_measured: u64,
    pub sent: u64,
    pub errors: HashMap<String, u64>,
    pub close: Option<String>,
}

impl ConnResult {
    pub fn new(chats: Vec<i64>) -> Self {
        ConnResult {
            log: ConnLog {
                member_of: chats,
                seen: HashMap::new(),
            },
            acked: Vec::new(),
            ack_us: histogram(),
            delivery_us: histogram(),
            acks_measured: 0,
            deliveries_measured: 0,
            sent: 0,
            errors: HashMap::new(),
            close: None,
        }
    }

    /// Counts an ack for a send meant to go out at `at` µs, measured when past the warm-up.
    pub fn ack(
        &mut self,
        live: &Live,
        chat: i64,
        seq: i64,
        at: Option<u64>,
        now_us: u64,
        warmup_us: u64,
    ) {
        live.outstanding.fetch_sub(1, Ordering::Relaxed);
        live.acked.fetch_add(1, Ordering::Relaxed);
        self.acked.push((chat, seq));
        if let Some(at) = at.filter(|&at| at >= warmup_us) {
            let us = now_us.saturating_sub(at).max(1);
            let _ = self.ack_us.record(us);
            let _ = live.ack_us.lock().expect("not poisoned").record(us);
            self.acks_measured += 1;
        }
    }

    /// Times a delivery of a message meant to go out at `at` µs, when past the warm-up.
    pub fn delivery(&mut self, at: Option<u64>, now_us: u64, warmup_us: u64) {
        if let Some(at) = at.filter(|&at| at >= warmup_us) {
            let _ = self.delivery_us.record(now_us.saturating_sub(at).max(1));
            self.deliveries_measured += 1;
        }
    }
}

pub fn codec(arg: CodecArg) -> Codec {
    match arg {
        CodecArg::Json => Codec::Json,
        CodecArg::Msgpack => Codec::MsgPack,
    }
}

/// Microseconds after the start at which the message was meant to be sent.
pub fn intended(body: &str) -> Option<u64> {
    body.split_once(':')?.0.parse().ok()
}

/// Opens socket `slot` (which picks the node among `--targets`) with `token`.
pub async fn connect(
    args: &Args,
    slot: usize,
    token: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut req = args.ws_url(slot).into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    req.headers_mut().insert(
        "sec-websocket-protocol",
        codec(args.codec).protocol().parse()?,
    );
    Ok(
        tokio_tungstenite::connect_async_with_config(req, None, true)
            .await?
            .0,
    )
}

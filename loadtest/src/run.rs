//! The load itself: one socket per account, an open-loop sender and a reader on each. Senders
//! keep their schedule whatever the server does; latency counts from the intended send time,
//! carried in the message body, so a stalled server shows as latency, not as a lower rate.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use xfchat::ids::ChatId;
use xfchat::protocol::ClientFrame;

use crate::cli::{Args, Scenario};
use crate::client::{codec, connect, intended, ConnResult, Live};
use crate::glance::{glance, Glance};
use crate::report::Steady;
use crate::schedule::{Schedule, Sender};
use crate::setup::Layout;

/// Connects every account, runs the load, waits for outstanding answers (at most the drain
/// time), and returns what each connection saw.
pub async fn drive(args: &Args, layout: &Layout, progress: bool) -> Driven {
    let chats_of = layout.chats_of();
    let mut sockets = Vec::new();
    let mut failures = 0;
    let mut slow = Vec::new();
    for &i in &layout.slow {
        match connect(args, i, &layout.accounts[i].token).await {
            Ok(ws) => slow.push(ws),
            Err(e) => eprintln!("xfchat-load: slow consumer {i} failed to connect: {e}"),
        }
    }
    let driven_here = args.scenario != Scenario::Reconnect;
    for (i, account) in layout
        .accounts
        .iter()
        .enumerate()
        .filter(|(i, _)| driven_here && !layout.slow.contains(i))
    {
        match connect(args, i, &account.token).await {
            Ok(ws) => sockets.push((i, ws)),
            Err(e) => {
                failures += 1;
                eprintln!("xfchat-load: connection {i} failed: {e}");
            }
        }
    }
    // Each driven socket states where it is in its chats (their ends now, before this run's
    // sends), so its stream is exact from the first message whichever node committed it.
    let api = crate::setup::Api::new(&args.url);
    let mut positions: HashMap<usize, Positions> = HashMap::new();
    for (i, _) in &sockets {
        let token = &layout.accounts[*i].token;
        let listed = api
            .call(reqwest::Method::GET, "/api/chats", Some(token), Value::Null)
            .await
            .unwrap_or(Value::Null);
        let ends: HashMap<i64, i64> = listed["chats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["id"].as_i64()?, c["last_seq"].as_i64()?)))
            .collect();
        let at = chats_of[*i]
            .iter()
            .map(|c| (ChatId(*c), ends.get(c).copied().unwrap_or(0)))
            .collect();
        positions.insert(*i, at);
    }
    // How many driven sockets read each chat: an ack promises a delivery to each of the others.
    let mut readers: HashMap<i64, i64> = HashMap::new();
    for (i, _) in &sockets {
        for &chat in &chats_of[*i] {
            *readers.entry(chat).or_default() += 1;
        }
    }
    let readers = Arc::new(readers);
    let live = Arc::new(Live::new(Instant::now() + Duration::from_millis(200)));
    let stop = CancellationToken::new();
    let tasks: Vec<_> = if args.scenario == Scenario::Reconnect {
        // These clients open (and reopen) their own sockets.
        let clients: Vec<usize> = (0..layout.accounts.len())
            .filter(|i| !layout.slow.contains(i))
            .collect();
        let rate = args.rate / clients.len().max(1) as f64;
        clients
            .into_iter()
            .map(|i| {
                let (chats, token) = (chats_of[i].clone(), layout.accounts[i].token.clone());
                let (args, live, stop) = (args.clone(), live.clone(), stop.clone());
                tokio::spawn(crate::resume::client(
                    args, i, chats, token, rate, live, stop,
                ))
            })
            .collect()
    } else {
        let rate = args.rate / sockets.len().max(1) as f64;
        // In the `slow` scenario every n-th socket reads in bursts.
        let every = (args.scenario == Scenario::Slow && args.slow_fraction > 0.0)
            .then(|| (1.0 / args.slow_fraction).round().max(1.0) as usize);
        sockets
            .into_iter()
            .enumerate()
            .map(|(n, (i, ws))| {
                let chats = chats_of[i].clone();
                let (args, live, stop) = (args.clone(), live.clone(), stop.clone());
                let slow = every.is_some_and(|every| n % every == 0);
                let at = positions.remove(&i).unwrap_or_default();
                let readers = readers.clone();
                tokio::spawn(connection(
                    args, chats, at, ws, rate, slow, live, readers, stop,
                ))
            })
            .collect()
    };
    let bar = progress.then(|| crate::report::progress(args, live.clone()));
    tokio::time::sleep_until(live.start + args.warmup()).await;
    let from = Sample::take(args, &live).await;
    tokio::time::sleep_until(live.start + args.total()).await;
    let to = Sample::take(args, &live).await;
    // Every send answered, and (where the harness knows who reads what) every acked message
    // received by every connected member, within the drain time.
    let counts_deliveries = args.scenario != Scenario::Reconnect;
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain);
    while (live.outstanding.load(Ordering::Relaxed) > 0
        || counts_deliveries && live.undelivered.load(Ordering::Relaxed) > 0)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A moment more, so a duplicate sent after the last expected frame is still seen; resuming
    // clients, whose deliveries are not counted, get a second.
    let linger = if counts_deliveries { 200 } else { 1000 };
    tokio::time::sleep(Duration::from_millis(linger)).await;
    stop.cancel();
    if let Some(bar) = bar {
        bar.abort();
    }
    let mut results = Vec::new();
    for task in tasks {
        if let Ok(r) = task.await {
            results.push(r);
        }
    }
    let mut slow_closes = Vec::new();
    for ws in slow {
        slow_closes.push(close_reason(ws).await);
    }
    Driven {
        slow_closes,
        results,
        failures,
        unanswered: live.outstanding.load(Ordering::Relaxed).max(0) as u64,
        undelivered: live.undelivered.load(Ordering::Relaxed).max(0) as u64,
        steady: from.zip(to).map(|(from, to)| to.since(&from)),
        server_rss_bytes: crate::process::server(args).await.map(|u| u.rss_bytes),
    }
}

/// The counters and both processes' CPU at one instant.
struct Sample {
    at: Instant,
    acked: u64,
    delivered: u64,
    server: crate::process::Usage,
    harness: crate::process::Usage,
}

impl Sample {
    async fn take(args: &Args, live: &Live) -> Option<Sample> {
        let server = crate::process::server(args).await?;
        Some(Sample {
            at: Instant::now(),
            acked: live.acked.load(Ordering::Relaxed),
            delivered: live.delivered.load(Ordering::Relaxed),
            server,
            harness: crate::process::own()?,
        })
    }

    fn since(&self, from: &Sample) -> Steady {
        let per = |seconds: f64, n: u64| (n > 0).then(|| seconds * 1e6 / n as f64);
        let server = self.server.cpu_seconds - from.server.cpu_seconds;
        let harness = self.harness.cpu_seconds - from.harness.cpu_seconds;
        let (acked, delivered) = (self.acked - from.acked, self.delivered - from.delivered);
        Steady {
            seconds: (self.at - from.at).as_secs_f64(),
            acked,
            delivered,
            server_cpu_seconds: server,
            harness_cpu_seconds: harness,
            server_cpu_us_per_acked: per(server, acked),
            server_cpu_us_per_delivery: per(server, delivered),
            harness_cpu_us_per_frame: per(harness, acked + delivered),
        }
    }
}

/// Reads what a never-reading socket was sent until the server's close (or 5 s), and returns
/// the close reason, if the server closed it.
async fn close_reason(mut ws: Socket) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(WsMessage::Close(frame)))) => {
                return Some(frame.map(|f| f.reason.to_string()).unwrap_or_default())
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return Some("connection dropped".into()),
            Err(_) => return None,
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Driven {
    /// How each slow consumer ended: the server's close reason, or None if still open.
    pub slow_closes: Vec<Option<String>>,
    pub results: Vec<ConnResult>,
    pub failures: usize,
    /// Sends that got neither an ack nor an error by the end of the drain.
    pub unanswered: u64,
    /// Deliveries the acks promised that had not come by the end of the drain.
    pub undelivered: u64,
    /// The measured window, past the warm-up.
    pub steady: Option<Steady>,
    /// The server's resident memory at the end.
    pub server_rss_bytes: Option<f64>,
}

/// A socket's position in each of its chats.
type Positions = BTreeMap<ChatId, i64>;

#[allow(clippy::too_many_arguments)]
async fn connection(
    args: Args,
    chats: Vec<i64>,
    positions: Positions,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    rate: f64,
    slow: bool,
    live: Arc<Live>,
    readers: Arc<HashMap<i64, i64>>,
    stop: CancellationToken,
) -> ConnResult {
    let codec = codec(args.codec);
    let (mut sink, mut stream) = ws.split();
    let hello = ClientFrame::Resume {
        epoch: None,
        positions,
        reference: None,
    };
    let _ = sink.send(codec.encode(&hello)).await;
    let pause = Duration::from_secs_f64(args.slow_pause);
    let mut reading_until = Instant::now() + Duration::from_secs(1);
    let warmup_us = args.warmup().as_micros() as u64;
    let (body_bytes, schedule) = (
        args.body_bytes,
        (rate > 0.0).then(|| Schedule::new(rate, args.arrival, args.total())),
    );
    let sender_live = live.clone();
    let sender_chats = chats.clone();
    let sender = tokio::spawn(async move {
        let sent = match schedule {
            Some(schedule) => {
                let sender = Sender {
                    codec,
                    chats: &sender_chats,
                    body_bytes,
                    outstanding: &sender_live.outstanding,
                };
                sender.run(&mut sink, schedule, sender_live.start).await
            }
            None => 0,
        };
        (sent, sink)
    });

    let mut r = ConnResult::new(chats);
    loop {
        if slow && Instant::now() >= reading_until {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
            reading_until = Instant::now() + Duration::from_secs(1);
        }
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            msg = stream.next() => msg,
        };
        let msg = match msg {
            Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => m,
            Some(Ok(WsMessage::Close(frame))) => {
                r.close = Some(frame.map(|f| f.reason.to_string()).unwrap_or_default());
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                r.close = Some(e.to_string());
                break;
            }
            None => break,
        };
        let now_us = live.start.elapsed().as_micros() as u64;
        match glance(&msg) {
            Some(Glance::Ack(m)) => {
                let others = readers.get(&m.chat_id).map_or(0, |n| n - 1);
                live.undelivered.fetch_add(others, Ordering::Relaxed);
                r.ack(
                    &live,
                    m.chat_id,
                    m.seq,
                    intended(&m.body),
                    now_us,
                    warmup_us,
                );
                r.log.seen.entry(m.chat_id).or_default().push(m.seq);
            }
            Some(Glance::Message(m)) => {
                live.delivered.fetch_add(1, Ordering::Relaxed);
                live.undelivered.fetch_sub(1, Ordering::Relaxed);
                r.log.seen.entry(m.chat_id).or_default().push(m.seq);
                r.delivery(intended(&m.body), now_us, warmup_us);
            }
            Some(Glance::Error { code, answered }) => {
                if answered {
                    live.outstanding.fetch_sub(1, Ordering::Relaxed);
                }
                *r.errors.entry(code.into_owned()).or_default() += 1;
            }
            Some(Glance::Other) => {}
            None => *r.errors.entry("undecodable".into()).or_default() += 1,
        }
    }
    if let Ok((sent, mut sink)) = sender.await {
        r.sent = sent;
        let _ = sink.close().await;
    }
    r
}

//! `storm`: every connection reconnects at once, each `--storm-behind` messages behind in every
//! chat it is in, while senders keep sending over HTTP. Measures each socket's time from its
//! `resume` to caught up (its last `synced`), the sends' latency during the storm, and checks
//! that every socket's raw stream is contiguous from its position to the chat's end and that no
//! socket is closed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec, ServerFrame};

use crate::cli::Args;
use crate::client::{codec, connect};
use crate::figures::{histogram, Percentiles};
use crate::setup::{Api, Layout};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Storm {
    pub sockets: usize,
    pub behind_per_chat: usize,
    /// From a socket's `resume` to the `synced` of its last chat.
    pub caught_up: Percentiles,
    /// HTTP sends during the storm, from request to stored answer.
    pub send_latency: Percentiles,
    pub send_errors: usize,
    pub connect_failures: usize,
    /// Sockets the server closed.
    pub closed: usize,
    /// Sockets whose stream had a gap or a repeat.
    pub gapped: usize,
    /// Sockets whose stream did not reach the end of every chat.
    pub short: usize,
}

/// What one socket saw.
struct Seen {
    caught_up_us: Option<u64>,
    closed: bool,
    exact: bool,
    cursors: HashMap<i64, i64>,
}

pub async fn storm(args: &Args, layout: &Layout) -> anyhow::Result<Storm> {
    let api = Arc::new(Api::new(&args.url));
    let chats_of = layout.chats_of();
    // The backlog: every chat gets `behind` messages from its first member while nobody reads.
    eprintln!(
        "xfchat-load: storm backlog of {} per chat",
        args.storm_behind
    );
    stream::iter(layout.chats.iter())
        .map(|(chat, members)| {
            let (api, token) = (api.clone(), layout.accounts[members[0]].token.clone());
            async move {
                for i in 0..args.storm_behind {
                    let path = format!("/api/chats/{chat}/messages/{}", Uuid::new_v4());
                    api.call(
                        Method::PUT,
                        &path,
                        Some(&token),
                        json!({ "body": format!("b{i}") }),
                    )
                    .await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.setup_parallelism)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;

    let (stop_sending, stop_reading) = (
        tokio_util::sync::CancellationToken::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    let sends = Arc::new(Mutex::new((histogram(), 0usize)));
    let sender = tokio::spawn(send_during(
        args.clone(),
        layout.clone(),
        api.clone(),
        sends.clone(),
        stop_sending.clone(),
    ));
    let readers: Vec<_> = layout
        .accounts
        .iter()
        .zip(chats_of)
        .enumerate()
        .map(|(slot, (account, chats))| {
            let (args, token, stop) = (args.clone(), account.token.clone(), stop_reading.clone());
            tokio::spawn(async move { read(&args, slot, &token, chats, stop).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    stop_sending.cancel();
    sender.await?;
    // Deliveries of the last sends land within a moment; then the readers stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_reading.cancel();
    let mut tails = HashMap::new();
    for (chat, members) in &layout.chats {
        let token = &layout.accounts[members[0]].token;
        let body = api
            .call(
                Method::GET,
                &format!("/api/chats/{chat}"),
                Some(token),
                json!(null),
            )
            .await?;
        tails.insert(*chat, body["chat"]["last_seq"].as_i64().unwrap_or(0));
    }
    let (mut caught, mut failures, mut closed) = (histogram(), 0, 0);
    let (mut gapped, mut short) = (0, 0);
    for reader in readers {
        match reader.await? {
            None => failures += 1,
            Some(seen) => {
                closed += usize::from(seen.closed);
                let complete = seen
                    .cursors
                    .iter()
                    .all(|(chat, at)| tails.get(chat) == Some(at));
                gapped += usize::from(!seen.exact);
                short += usize::from(!complete);
                if let Some(us) = seen.caught_up_us {
                    caught.record(us.max(1))?;
                }
            }
        }
    }
    let (latency, send_errors) = &*sends.lock().await;
    Ok(Storm {
        sockets: layout.accounts.len(),
        behind_per_chat: args.storm_behind,
        caught_up: Percentiles::from(&caught),
        send_latency: Percentiles::from(latency),
        send_errors: *send_errors,
        connect_failures: failures,
        closed,
        gapped,
        short,
    })
}

/// Sends `args.rate` messages a second over HTTP into the chats, in turn, until `stop`.
async fn send_during(
    args: Args,
    layout: Layout,
    api: Arc<Api>,
    sends: Arc<Mutex<(Histogram<u64>, usize)>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1.0)));
    let mut n = 0usize;
    let mut inflight = Vec::new();
    while !stop.is_cancelled() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (chat, members) = &layout.chats[n % layout.chats.len()];
        n += 1;
        let token = layout.accounts[members[0]].token.clone();
        let (api, sends, chat) = (api.clone(), sends.clone(), *chat);
        inflight.push(tokio::spawn(async move {
            let started = Instant::now();
            let path = format!("/api/chats/{chat}/messages/{}", Uuid::new_v4());
            let ok = api
                .call(Method::PUT, &path, Some(&token), json!({ "body": "live" }))
                .await;
            let mut s = sends.lock().await;
            match ok {
                Ok(_) => {
                    s.0.record(started.elapsed().as_micros().max(1) as u64)
                        .unwrap_or(())
                }
                Err(_) => s.1 += 1,
            }
        }));
    }
    for task in inflight {
        let _ = task.await;
    }
}

/// One reconnecting socket: `resume` from 0 in each of its chats, then read until `stop`.
async fn read(
    args: &Args,
    slot: usize,
    token: &str,
    chats: Vec<i64>,
    stop: tokio_util::sync::CancellationToken,
) -> Option<Seen> {
    let ws = connect(args, slot, token).await.ok()?;
    let codec: Codec = codec(args.codec);
    let (mut sink, mut stream) = ws.split();
    let positions = chats.iter().map(|&c| (ChatId(c), 0)).collect();
    let resumed = Instant::now();
    sink.send(codec.encode(&ClientFrame::Resume {
        epoch: None,
        positions,
        reference: None,
    }))
    .await
    .ok()?;
    let mut seen = Seen {
        caught_up_us: None,
        closed: false,
        exact: true,
        cursors: chats.iter().map(|&c| (c, 0)).collect(),
    };
    let mut synced = 0;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            msg = stream.next() => msg,
        };
        let msg = match msg {
            Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => m,
            Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => {
                seen.closed = true;
                break;
            }
            Some(Ok(_)) => continue,
        };
        match Codec::decode::<ServerFrame>(&msg) {
            Ok(ServerFrame::Message { message }) => {
                let at = seen.cursors.entry(message.chat_id.0).or_insert(0);
                seen.exact &= message.seq == *at + 1;
                *at = message.seq;
            }
            Ok(ServerFrame::Synced { .. }) => {
                synced += 1;
                if synced == chats.len() {
                    seen.caught_up_us = Some(resumed.elapsed().as_micros() as u64);
                }
            }
            _ => {}
        }
    }
    Some(seen)
}

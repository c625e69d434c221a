//! Each node listens on one connection of its own (see [`Transport::listen`]); the loop here
//! delivers what it hears, checks positions every few seconds, and sends a heartbeat it expects
//! to hear back: a listener that hears no heartbeat (a dead or half-open connection) is dropped
//! and opened again, and after every (re)start every chat with a member online here is checked
//! against the database, because whatever was announced while nobody listened is gone. While
//! it cannot listen at all, it checks at every try. A node that has heard no other node for a
//! minute checks nothing and announces nothing: alone, all its commits reach its sockets
//! directly. When it first hears another node, which may have committed unannounced while it
//! had heard no one either, it checks every chat with a member online here at each tick for a
//! while, until both have surely heard each other.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::publisher::unpack;
use super::{decode_ranges, Channel, Event, Inbox, Notice, Peers, Publisher, Transport};
use crate::hub::{Hub, Scope, Suspects};
use crate::metrics as m;
use crate::protocol::ServerFrame;

/// How often the position check runs and a heartbeat is sent.
const TICK: Duration = Duration::from_secs(2);
/// A listener that heard none of its heartbeats for this long is opened again.
const DEAF_AFTER: Duration = Duration::from_secs(10);
/// After first hearing another node, how long every chat with a member online is checked at
/// each tick: the other node starts announcing once it hears this one's heartbeat, within a
/// tick or two.
const MEETING: Duration = Duration::from_secs(10);

/// Listens until `stop`, reconnecting as often as needed.
pub async fn run<T: Transport>(
    transport: Arc<T>,
    hub: Arc<Hub>,
    publisher: Publisher,
    stop: CancellationToken,
) {
    let mut first = true;
    let peers = publisher.peers();
    let inbox = Inbox::of(publisher.node());
    while !stop.is_cancelled() {
        let listening = tokio::select! {
            _ = stop.cancelled() => return,
            listening = transport.listen(&inbox) => listening,
        };
        match listening {
            Ok(listening) => {
                if !first {
                    metrics::counter!(m::BUS_RECONNECTS).increment(1);
                    tracing::info!("bus listener reconnected");
                }
                first = false;
                serve(listening, &hub, &publisher, &stop).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "bus listener cannot connect; retrying");
                // Meanwhile the database is read instead: other nodes' messages still arrive,
                // later. (While the bus is down but the database is not, as with NATS.)
                if peers.around() {
                    let mut suspects = Suspects::default();
                    if let Err(e) = hub.check_positions(Scope::Online, &mut suspects).await {
                        tracing::warn!(error = %e, "position check without the bus failed");
                    }
                }
            }
        }
        metrics::gauge!(m::BUS_UP).set(0.0);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Delivers notifications and checks positions while the listener is heard.
async fn serve(
    mut listening: super::Listening,
    hub: &Hub,
    publisher: &Publisher,
    stop: &CancellationToken,
) {
    let peers = publisher.peers();
    let mut suspects = Suspects::default();
    // Until when every chat with a member online is checked at each tick.
    let mut meeting: Option<Instant> = None;
    // Listening again: what other nodes announced meanwhile is found in the database.
    if peers.around() {
        if let Err(e) = hub.check_positions(Scope::Online, &mut suspects).await {
            tracing::warn!(error = %e, "position check after (re)connecting failed");
            return;
        }
    }
    let mut heard = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            got = listening.notices.recv_many(&mut batch, BATCH) => {
                if got == 0 {
                    tracing::warn!("bus listener connection lost");
                    return;
                }
                if deliver(hub, publisher, &mut batch, &mut heard, &mut meeting).await.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {
                if heard.elapsed() > DEAF_AFTER {
                    tracing::warn!("bus listener heard no heartbeat; reconnecting");
                    return;
                }
                metrics::gauge!(m::BUS_UP).set(1.0);
                publisher.heartbeat();
                let scope = match meeting {
                    Some(until) if Instant::now() < until => Scope::Online,
                    _ => Scope::Active,
                };
                if peers.around() {
                    if let Err(e) = hub.check_positions(scope, &mut suspects).await {
                        tracing::warn!(error = %e, "position check failed");
                    }
                }
            }
        }
    }
}

/// Most notices delivered in one go.
const BATCH: usize = 1024;

/// Delivers a batch of notifications: the message ranges of all of them with one read.
/// Fails when the read fails, and the listener is restarted (then everything is checked).
async fn deliver(
    hub: &Hub,
    publisher: &Publisher,
    batch: &mut Vec<Notice>,
    heard: &mut Instant,
    meeting: &mut Option<Instant>,
) -> Result<(), ()> {
    let node = publisher.node();
    let peers = publisher.peers();
    let mut met = |peers: &Peers| {
        if peers.heard() {
            *meeting = Some(Instant::now() + MEETING);
        }
    };
    let mut ranges = Vec::new();
    for n in batch.drain(..) {
        if n.channel == Channel::Messages {
            metrics::counter!(m::BUS_RECEIVED, "channel" => "messages").increment(1);
            match decode_ranges(&n.payload) {
                Some((from, rs)) if from != node => {
                    met(peers);
                    ranges.extend(rs);
                }
                Some(_) => {}
                None => tracing::warn!("unreadable notice on the messages channel"),
            }
            continue;
        }
        metrics::counter!(m::BUS_RECEIVED, "channel" => "events").increment(1);
        // Several sealed events to a notification after their node's name (see `Publisher`);
        // this node's own only tell that the listener hears.
        let (from, events) = unpack(&n.payload);
        if from == Some(node) {
            *heard = Instant::now();
            continue;
        }
        for sealed in events {
            match Event::open(publisher.seal(), sealed) {
                Ok(e) if e.node == node => *heard = Instant::now(),
                Ok(Event {
                    users,
                    frame: Some(ServerFrame::Message { message }),
                    ..
                }) => {
                    met(peers);
                    hub.deliver_message(&users, message);
                }
                Ok(Event {
                    users,
                    frame: Some(frame),
                    ..
                }) => {
                    met(peers);
                    hub.deliver_event(&users, frame);
                }
                Ok(Event {
                    users,
                    reload: Some(chat),
                    ..
                }) => {
                    met(peers);
                    hub.deliver_chat(&users, chat).await;
                }
                Ok(e) => {
                    if e.is_legacy_heartbeat() {
                        peers.heard_legacy();
                    }
                    if e.is_heartbeat() {
                        peers.heartbeat_from(&e.node, e.inbox);
                    }
                    met(peers);
                }
                Err(refused) => {
                    metrics::counter!(m::BUS_REFUSED, "reason" => refused.label()).increment(1);
                    tracing::debug!(reason = refused.label(), "refused an event on the bus");
                }
            }
        }
    }
    if ranges.is_empty() {
        return Ok(());
    }
    hub.deliver_committed(ranges).await.map_err(|e| {
        tracing::warn!(error = %e, "could not read another node's messages; checking positions");
    })
}

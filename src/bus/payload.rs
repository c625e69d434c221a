//! What travels between nodes, as text both buses carry: the seq ranges a group commit stored,
//! and events for some users.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::seal::Seal;
use crate::ids::{ChatId, UserId};
use crate::protocol::ServerFrame;

/// How far an event's time may lie from the receiver's clock: older ones are replays.
const EVENT_MAX_AGE_MS: u64 = 60_000;

/// PostgreSQL refuses payloads of 8,000 bytes or more; ours stay below this.
pub const PAYLOAD_MAX: usize = 7_900;

/// What a group commit stored in one chat: seqs `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub chat: ChatId,
    pub first: i64,
    pub last: i64,
}

/// The ranges that `(chat, seq)` pairs of several chats cover, one per chat.
pub fn ranges_of(stored: impl IntoIterator<Item = (ChatId, i64)>) -> Vec<Range> {
    let mut by_chat: HashMap<ChatId, (i64, i64)> = HashMap::new();
    for (chat, seq) in stored {
        let range = by_chat.entry(chat).or_insert((seq, seq));
        *range = (range.0.min(seq), range.1.max(seq));
    }
    by_chat
        .into_iter()
        .map(|(chat, (first, last))| Range { chat, first, last })
        .collect()
}

/// The payloads announcing `ranges` from `node`: `node|chat:first-last,chat:first-last`, split
/// so that none reaches [`PAYLOAD_MAX`].
pub fn encode_ranges(node: &str, ranges: &[Range]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    for r in ranges {
        let item = format!("{}:{}-{}", r.chat, r.first, r.last);
        if !current.is_empty() && current.len() + 1 + item.len() > PAYLOAD_MAX {
            payloads.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(node);
            current.push('|');
        } else {
            current.push(',');
        }
        current.push_str(&item);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// The node and ranges of a payload made by [`encode_ranges`]; None when it is not one.
pub fn decode_ranges(payload: &str) -> Option<(&str, Vec<Range>)> {
    let (node, items) = payload.split_once('|')?;
    let ranges = items
        .split(',')
        .map(|item| {
            let (chat, seqs) = item.split_once(':')?;
            let (first, last) = seqs.split_once('-')?;
            let range = Range {
                chat: ChatId(chat.parse().ok()?),
                first: first.parse().ok()?,
                last: last.parse().ok()?,
            };
            (range.first >= 1 && range.first <= range.last).then_some(range)
        })
        .collect::<Option<Vec<_>>>()?;
    Some((node, ranges))
}

/// The payloads `encode` makes of `users`, in chunks halved until every payload fits below
/// [`PAYLOAD_MAX`], or until one user each.
fn split(users: &[UserId], encode: impl Fn(&[UserId]) -> String) -> Vec<String> {
    let mut chunk = users.len().max(1);
    loop {
        let payloads: Vec<String> = users.chunks(chunk).map(&encode).collect();
        if chunk == 1 || payloads.iter().all(|p| p.len() < PAYLOAD_MAX) {
            return payloads;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// An event for some users, from one node to the others.
#[derive(Debug, Serialize, Deserialize)]
pub struct Event {
    /// The node that sent it.
    pub node: String,
    /// When it was sent, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub at: u64,
    /// Who gets it; empty for a heartbeat.
    pub users: Vec<UserId>,
    pub frame: Option<ServerFrame>,
    /// A chat the receiver reads and delivers as a `chat` frame: what a `chat` or `members`
    /// frame too large for the bus becomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ChatId>,
    /// In a heartbeat: the node reads packed payloads (see `Publisher`). Versions older than
    /// migration 11 do not say so, and read one sealed event to a payload.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub packs: bool,
    /// In a heartbeat: the node listens on an inbox of its own, and wants events for it there
    /// rather than on the channel every node hears (see `Publisher`). Older versions do not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inbox: bool,
}

/// Why a node refused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its seal does not hold: not from a node with the cluster's secret, or changed.
    Seal,
    /// Sealed, but not an event this version reads.
    Unreadable,
    /// Older (or newer) than a minute: a replay.
    Stale,
    /// A frame that never travels as an event (a message, an ack).
    Kind,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Seal => "seal",
            Refused::Unreadable => "unreadable",
            Refused::Stale => "stale",
            Refused::Kind => "kind",
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The frames that travel as events. A message does, sealed, carried from the node that
/// committed it with the members it had at the commit; an ack never does.
fn travels(frame: &ServerFrame) -> bool {
    matches!(
        frame,
        ServerFrame::Message { .. }
            | ServerFrame::Read { .. }
            | ServerFrame::Typing { .. }
            | ServerFrame::FriendRequest { .. }
            | ServerFrame::Chat { .. }
            | ServerFrame::Members { .. }
            | ServerFrame::ChatRemoved { .. }
            | ServerFrame::Presence { .. }
    )
}

impl Event {
    fn sealed(&self, seal: &Seal) -> String {
        seal.seal(&serde_json::to_string(self).expect("events always serialise"))
    }

    /// The sealed payloads for `frame` to `users`, split over several when the users are many.
    /// A `chat` or `members` frame too large for one payload goes as a reference to its chat,
    /// which the receivers read; anything else too large is dropped, and the count returned.
    pub fn encode(
        seal: &Seal,
        node: &str,
        users: &[UserId],
        frame: &ServerFrame,
    ) -> (Vec<String>, usize) {
        let event = |users: &[UserId], frame: Option<ServerFrame>, reload| Event {
            node: node.to_owned(),
            at: now_ms(),
            users: users.to_vec(),
            frame,
            reload,
            packs: false,
            inbox: false,
        };
        let payloads = split(users, |users| {
            event(users, Some(frame.clone()), None).sealed(seal)
        });
        if payloads.iter().all(|p| p.len() < PAYLOAD_MAX) {
            return (payloads, 0);
        }
        let reload = match frame {
            ServerFrame::Chat { chat } => Some(chat.id),
            ServerFrame::Members { chat_id, .. } => Some(*chat_id),
            _ => None,
        };
        match reload {
            // A reference is small: users go as many to a payload as fit.
            Some(chat) => (
                split(users, |users| event(users, None, Some(chat)).sealed(seal)),
                0,
            ),
            None => {
                let (fit, big): (Vec<_>, Vec<_>) =
                    payloads.into_iter().partition(|p| p.len() < PAYLOAD_MAX);
                (fit, big.len())
            }
        }
    }

    /// A node's sealed heartbeat: it expects to hear its own.
    pub fn heartbeat(seal: &Seal, node: &str) -> String {
        Event {
            node: node.to_owned(),
            at: now_ms(),
            users: Vec::new(),
            frame: None,
            reload: None,
            packs: true,
            inbox: true,
        }
        .sealed(seal)
    }

    /// Whether this is a heartbeat: no users, no frame, nothing to read.
    pub fn is_heartbeat(&self) -> bool {
        self.users.is_empty() && self.frame.is_none() && self.reload.is_none()
    }

    /// A heartbeat from a node of a version that reads one event to a payload only.
    pub fn is_legacy_heartbeat(&self) -> bool {
        !self.packs && self.is_heartbeat()
    }

    /// The event in a payload, if its seal holds, it is recent and carries what may travel.
    pub fn open(seal: &Seal, payload: &str) -> Result<Event, Refused> {
        let json = seal.open(payload).ok_or(Refused::Seal)?;
        let event: Event = serde_json::from_str(json).map_err(|_| Refused::Unreadable)?;
        if now_ms().abs_diff(event.at) > EVENT_MAX_AGE_MS {
            return Err(Refused::Stale);
        }
        if event.frame.as_ref().is_some_and(|f| !travels(f)) {
            return Err(Refused::Kind);
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip_and_split_below_the_payload_limit() {
        let ranges: Vec<Range> = (1..2000)
            .map(|i| Range {
                chat: ChatId(i * 1_000_003),
                first: i,
                last: i + 7,
            })
            .collect();
        let payloads = encode_ranges("host-a:8080", &ranges);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() < PAYLOAD_MAX);
            let (node, rs) = decode_ranges(p).unwrap();
            assert_eq!(node, "host-a:8080");
            back.extend(rs);
        }
        assert_eq!(back, ranges);
        assert!(decode_ranges("n|1:5-4").is_none(), "an empty range");
        assert!(decode_ranges("garbage").is_none());
    }

    #[test]
    fn events_for_many_users_split_below_the_payload_limit() {
        let seal = Seal::new("secret");
        let users: Vec<UserId> = (0..5000).map(|i| UserId(i * 1_000_003)).collect();
        let frame = ServerFrame::ChatRemoved { chat_id: ChatId(9) };
        let (payloads, dropped) = Event::encode(&seal, "n", &users, &frame);
        assert_eq!(dropped, 0);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() < PAYLOAD_MAX);
            let event = Event::open(&seal, p).unwrap();
            assert_eq!(event.frame, Some(frame.clone()));
            back.extend(event.users);
        }
        assert_eq!(back, users);
    }

    fn big_chat(members: i64) -> crate::protocol::Chat {
        crate::protocol::Chat {
            id: ChatId(7),
            kind: crate::protocol::wire::ChatKind::Group,
            title: Some("big".into()),
            created_by: UserId(0),
            members: (0..members)
                .map(|i| crate::protocol::Member {
                    id: UserId(i),
                    username: format!("member-{i}"),
                    display_name: format!("Member number {i}"),
                    last_read_seq: 0,
                })
                .collect(),
            last_seq: 0,
            last_read_seq: 0,
            unread: 0,
            created_at: chrono::Utc::now(),
            last_message: None,
            last_activity_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_chat_event_too_large_for_the_bus_goes_as_a_reference_to_its_chat() {
        let seal = Seal::new("secret");
        let users: Vec<UserId> = (0..1000).map(UserId).collect();
        let frame = ServerFrame::Chat {
            chat: big_chat(1000),
        };
        let (payloads, dropped) = Event::encode(&seal, "n", &users, &frame);
        assert_eq!(dropped, 0);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() < PAYLOAD_MAX);
            let event = Event::open(&seal, p).unwrap();
            assert_eq!((event.frame, event.reload), (None, Some(ChatId(7))));
            back.extend(event.users);
        }
        assert_eq!(back, users);
    }

    #[test]
    fn an_event_is_refused_unsealed_forged_stale_or_carrying_an_ack_and_a_sealed_message_travels() {
        let seal = Seal::new("secret");
        let users = [UserId(1)];
        let frame = ServerFrame::Typing {
            chat_id: ChatId(1),
            user_id: UserId(2),
        };
        let (payloads, _) = Event::encode(&seal, "n", &users, &frame);
        assert!(Event::open(&seal, &payloads[0]).is_ok());
        let (forged, _) = Event::encode(&Seal::new("guess"), "n", &users, &frame);
        assert_eq!(Event::open(&seal, &forged[0]).unwrap_err(), Refused::Seal);
        let bare = payloads[0].split_once('.').unwrap().1;
        assert_eq!(Event::open(&seal, bare).unwrap_err(), Refused::Seal);
        let old = seal.seal(&bare.replacen("\"at\":", "\"at\":1", 1));
        assert_eq!(Event::open(&seal, &old).unwrap_err(), Refused::Stale);
        let message = crate::protocol::Message {
            id: crate::ids::MessageId(1),
            chat_id: ChatId(1),
            seq: 1,
            sender_id: UserId(2),
            client_msg_id: uuid::Uuid::nil(),
            body: "committed on another node".into(),
            created_at: chrono::Utc::now(),
            kind: crate::protocol::EntryKind::Message,
            target: None,
            reply_to: Some(1),
            edited_at: None,
            deleted: false,
            attachments: Vec::new(),
            reactions: Vec::new(),
        };
        let sealed = |frame| {
            Event {
                node: "n".into(),
                at: now_ms(),
                users: users.to_vec(),
                frame: Some(frame),
                reload: None,
                packs: false,
                inbox: false,
            }
            .sealed(&seal)
        };
        // A message travels, sealed, from the node that committed it; an ack never does.
        let carried = sealed(ServerFrame::Message {
            message: message.clone(),
        });
        assert!(Event::open(&seal, &carried).is_ok());
        let ack = sealed(ServerFrame::Ack {
            client_msg_id: uuid::Uuid::nil(),
            message,
        });
        assert_eq!(Event::open(&seal, &ack).unwrap_err(), Refused::Kind);
    }
}

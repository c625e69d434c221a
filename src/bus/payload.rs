//! What travels between nodes, as text both buses carry: the seq ranges a group commit stored,
//! and events for some users.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ids::{ChatId, UserId};
use crate::protocol::ServerFrame;

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

/// An event for some users, from one node to the others.
#[derive(Debug, Serialize, Deserialize)]
pub struct Event {
    /// The node that sent it.
    pub node: String,
    /// Who gets it; empty for a heartbeat.
    pub users: Vec<UserId>,
    pub frame: Option<ServerFrame>,
}

impl Event {
    /// The payloads for `frame` to `users`, split over several when the users are many.
    pub fn encode(node: &str, users: &[UserId], frame: &ServerFrame) -> Vec<String> {
        let mut chunk = users.len().max(1);
        loop {
            let payloads: Vec<String> = users
                .chunks(chunk)
                .map(|users| {
                    serde_json::to_string(&Event {
                        node: node.to_owned(),
                        users: users.to_vec(),
                        frame: Some(frame.clone()),
                    })
                    .expect("events always serialise")
                })
                .collect();
            if payloads.iter().all(|p| p.len() < PAYLOAD_MAX) || chunk == 1 {
                return payloads
                    .into_iter()
                    .filter(|p| p.len() < PAYLOAD_MAX)
                    .collect();
            }
            chunk = chunk.div_ceil(2);
        }
    }

    /// A node's heartbeat: it expects to hear its own.
    pub fn heartbeat(node: &str) -> String {
        serde_json::to_string(&Event {
            node: node.to_owned(),
            users: Vec::new(),
            frame: None,
        })
        .expect("events always serialise")
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
        let users: Vec<UserId> = (0..5000).map(|i| UserId(i * 1_000_003)).collect();
        let frame = ServerFrame::ChatRemoved { chat_id: ChatId(9) };
        let payloads = Event::encode("n", &users, &frame);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() < PAYLOAD_MAX);
            let event: Event = serde_json::from_str(p).unwrap();
            assert_eq!(event.frame, Some(frame.clone()));
            back.extend(event.users);
        }
        assert_eq!(back, users);
    }
}

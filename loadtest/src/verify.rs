//! The exactness check: every recipient got every acked message of its chats exactly once and in
//! seq order, and what was acked is exactly what the database holds.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// What one connection saw: per chat, the seqs of `message` frames and of its own acks, in the
/// order they arrived.
#[derive(Debug, Default, Clone)]
pub struct ConnLog {
    pub member_of: Vec<i64>,
    pub seen: HashMap<i64, Vec<i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// An acked message never reached a member's connection.
    Missing { conn: usize, chat: i64, seq: i64 },
    /// A connection got the same message twice.
    Duplicate { conn: usize, chat: i64, seq: i64 },
    /// A connection got a message after a later one of the same chat.
    Reordered {
        conn: usize,
        chat: i64,
        seq: i64,
        after: i64,
    },
    /// A connection got a message nobody was acked for.
    DeliveredUnacked { conn: usize, chat: i64, seq: i64 },
    /// The same (chat, seq) was acked twice, for different sends.
    AckedTwice { chat: i64, seq: i64 },
    /// Acked but not in the database.
    Lost { chat: i64, seq: i64 },
    /// In the database but never acked.
    StoredUnacked { chat: i64, seq: i64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { conn, chat, seq } => {
                write!(f, "connection {conn} never got chat {chat} seq {seq}")
            }
            Problem::Duplicate { conn, chat, seq } => {
                write!(f, "connection {conn} got chat {chat} seq {seq} twice")
            }
            Problem::Reordered {
                conn,
                chat,
                seq,
                after,
            } => {
                write!(
                    f,
                    "connection {conn} got chat {chat} seq {seq} after seq {after}"
                )
            }
            Problem::DeliveredUnacked { conn, chat, seq } => {
                write!(
                    f,
                    "connection {conn} got chat {chat} seq {seq}, which was never acked"
                )
            }
            Problem::AckedTwice { chat, seq } => {
                write!(f, "chat {chat} seq {seq} was acked for two sends")
            }
            Problem::Lost { chat, seq } => {
                write!(f, "chat {chat} seq {seq} was acked but is not stored")
            }
            Problem::StoredUnacked { chat, seq } => {
                write!(f, "chat {chat} seq {seq} is stored but was never acked")
            }
        }
    }
}

/// Checks the run. `acked` holds, per chat, the seq of every ack received (in any order);
/// `stored`, when given, the seqs the database holds for the run's chats.
pub fn check(
    acked: &HashMap<i64, Vec<i64>>,
    conns: &[ConnLog],
    stored: Option<&HashMap<i64, Vec<i64>>>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut acked_sets: HashMap<i64, BTreeSet<i64>> = HashMap::new();
    for (&chat, seqs) in acked {
        let set = acked_sets.entry(chat).or_default();
        for &seq in seqs {
            if !set.insert(seq) {
                problems.push(Problem::AckedTwice { chat, seq });
            }
        }
    }
    let empty = BTreeSet::new();
    for (conn, log) in conns.iter().enumerate() {
        for &chat in &log.member_of {
            let expected = acked_sets.get(&chat).unwrap_or(&empty);
            let seen = log.seen.get(&chat).map(Vec::as_slice).unwrap_or(&[]);
            let mut got = BTreeSet::new();
            let mut last = 0;
            for &seq in seen {
                if !got.insert(seq) {
                    problems.push(Problem::Duplicate { conn, chat, seq });
                    continue;
                }
                if seq < last {
                    problems.push(Problem::Reordered {
                        conn,
                        chat,
                        seq,
                        after: last,
                    });
                }
                last = last.max(seq);
                if !expected.contains(&seq) {
                    problems.push(Problem::DeliveredUnacked { conn, chat, seq });
                }
            }
            for &seq in expected.difference(&got) {
                problems.push(Problem::Missing { conn, chat, seq });
            }
        }
    }
    if let Some(stored) = stored {
        let chats: BTreeSet<i64> = acked_sets.keys().chain(stored.keys()).copied().collect();
        for chat in chats {
            let db: BTreeSet<i64> = stored
                .get(&chat)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            let ok = acked_sets.get(&chat).unwrap_or(&empty);
            problems.extend(ok.difference(&db).map(|&seq| Problem::Lost { chat, seq }));
            problems.extend(
                db.difference(ok)
                    .map(|&seq| Problem::StoredUnacked { chat, seq }),
            );
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seen: Vec<i64>, stored: Vec<i64>) -> Vec<Problem> {
        let acked = HashMap::from([(7, vec![1, 2, 3])]);
        let conn = ConnLog {
            member_of: vec![7],
            seen: HashMap::from([(7, seen)]),
        };
        check(&acked, &[conn], Some(&HashMap::from([(7, stored)])))
    }

    #[test]
    fn a_clean_run_has_no_problems() {
        assert_eq!(run(vec![1, 2, 3], vec![1, 2, 3]), []);
    }

    #[test]
    fn the_checker_catches_a_dropped_message() {
        assert_eq!(
            run(vec![1, 3], vec![1, 2, 3]),
            [Problem::Missing {
                conn: 0,
                chat: 7,
                seq: 2
            }]
        );
    }

    #[test]
    fn the_checker_catches_a_duplicated_message() {
        assert_eq!(
            run(vec![1, 2, 2, 3], vec![1, 2, 3]),
            [Problem::Duplicate {
                conn: 0,
                chat: 7,
                seq: 2
            }]
        );
    }

    #[test]
    fn the_checker_catches_a_reordered_message() {
        assert_eq!(
            run(vec![1, 3, 2], vec![1, 2, 3]),
            [Problem::Reordered {
                conn: 0,
                chat: 7,
                seq: 2,
                after: 3
            }]
        );
    }

    #[test]
    fn the_checker_catches_an_acked_message_missing_from_the_database() {
        assert_eq!(
            run(vec![1, 2, 3], vec![1, 3]),
            [Problem::Lost { chat: 7, seq: 2 }]
        );
    }

    #[test]
    fn the_checker_catches_a_stored_message_nobody_was_acked_for() {
        assert_eq!(
            run(vec![1, 2, 3], vec![1, 2, 3, 4]),
            [Problem::StoredUnacked { chat: 7, seq: 4 }]
        );
    }
}

//! Full-text search over the messages of the chats a user is in now, on the index of the
//! migration `message_search` (PostgreSQL's `simple` configuration: any language, no stemming).

use serde::Serialize;
use sqlx::PgConnection;

use super::messages::{self, Message};
use crate::error::AppResult;
use crate::ids::UserId;

/// Where a match starts and ends in a highlight: characters no message may hold (see
/// `validate::text`), so they cannot be forged by a sender.
const START: char = '\u{2}';
const STOP: char = '\u{3}';

/// One found message, with the passages around the matched words.
#[derive(Debug, Serialize)]
pub struct Hit {
    pub message: Message,
    pub rank: f32,
    /// The passages, in pieces: `match` pieces are the words the query matched. Plain text,
    /// never markup, so a client shows it without escaping anything.
    pub highlight: Vec<Piece>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Piece {
    pub text: String,
    #[serde(rename = "match")]
    pub matched: bool,
}

/// Messages of `user`'s chats matching `query` (web search syntax: words, "a phrase", -not,
/// or), best first, `limit` from `offset`.
pub async fn messages(
    conn: &mut PgConnection,
    user: UserId,
    query: &str,
    limit: i64,
    offset: i64,
) -> AppResult<Vec<Hit>> {
    #[derive(sqlx::FromRow)]
    struct HitRow {
        #[sqlx(flatten)]
        message: messages::Row,
        rank: f32,
        highlight: String,
    }
    let rows: Vec<HitRow> = sqlx::query_as(&format!(
        "SELECT {}, ts_rank(to_tsvector('simple', m.body), q) AS rank, \
                ts_headline('simple', m.body, q, $5) AS highlight \
         FROM websearch_to_tsquery('simple', $2) q \
         JOIN conversation_members cm ON cm.user_id = $1 \
         JOIN messages m ON m.conversation_id = cm.conversation_id \
         WHERE m.kind = 'message' AND m.deleted_at IS NULL \
           AND to_tsvector('simple', m.body) @@ q \
         ORDER BY rank DESC, m.created_at DESC, m.id DESC LIMIT $3 OFFSET $4",
        messages::MESSAGE_COLUMNS
    ))
    .bind(user)
    .bind(query)
    .bind(limit)
    .bind(offset)
    .bind(format!(
        "StartSel={START}, StopSel={STOP}, MaxWords=24, MinWords=8, ShortWord=0, MaxFragments=2, \
         FragmentDelimiter=\" … \""
    ))
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Hit {
            message: Message::from(r.message),
            rank: r.rank,
            highlight: pieces(&r.highlight),
        })
        .collect())
}

/// A highlight cut at its markers.
fn pieces(marked: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut matched = false;
    for part in marked.split([START, STOP]) {
        if !part.is_empty() {
            out.push(Piece {
                text: part.to_owned(),
                matched,
            });
        }
        matched = !matched;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_highlight_is_cut_into_plain_and_matched_pieces() {
        let got = pieces("say \u{2}hello\u{3} to \u{2}all\u{3}");
        let want = [
            ("say ", false),
            ("hello", true),
            (" to ", false),
            ("all", true),
        ];
        assert_eq!(
            got,
            want.map(|(t, m)| Piece {
                text: t.into(),
                matched: m
            })
        );
    }
}

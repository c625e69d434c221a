//! Reads from the read replica (XFCHAT_DATABASE_READ_URL). Membership and a chat's last seq
//! always come from the primary; only message rows come from the replica, and only as far as it
//! has them. Seqs are gapless, so a replica that lags shows as a short or shifted answer: what
//! it lacks is read from the primary, and no reader ever sees a gap. A replica that fails a
//! read rests for a few seconds, all reads going to the primary meanwhile.

use crate::db::{messages, Db, Op};
use crate::error::AppResult;
use crate::ids::ChatId;
use crate::metrics as m;
use crate::protocol::Message;

/// Messages `after + 1 ..= upto` of `chat`, in order: from the replica as far as it has them,
/// the rest from the primary. The caller has checked membership and that `upto` is stored.
pub async fn range(
    db: &Db,
    op: Op,
    chat: ChatId,
    after: i64,
    upto: i64,
) -> AppResult<Vec<Message>> {
    if upto <= after {
        return Ok(Vec::new());
    }
    let mut got = match db.replica_conn(op).await {
        None if db.has_replica() => None,
        None => return primary(db, op, chat, after, upto).await,
        Some(Ok(mut conn)) => {
            match messages::page(&mut conn, chat, Some(after), Some(upto + 1), upto - after).await {
                Ok(rows) => Some(rows),
                Err(e) => {
                    db.replica_failed(&e);
                    None
                }
            }
        }
        Some(Err(e)) => {
            db.replica_failed(&e);
            None
        }
    };
    let Some(mut got) = got.take() else {
        m::replica_read("failed");
        return primary(db, op, chat, after, upto).await;
    };
    // The replica's rows that continue the range without a gap.
    let kept = got
        .iter()
        .zip(after + 1..)
        .take_while(|(message, seq)| message.seq == *seq)
        .count();
    got.truncate(kept);
    let reached = after + kept as i64;
    if reached == upto {
        m::replica_read("replica");
        return Ok(got);
    }
    m::replica_read("behind");
    got.extend(primary(db, op, chat, reached, upto).await?);
    Ok(got)
}

async fn primary(db: &Db, op: Op, chat: ChatId, after: i64, upto: i64) -> AppResult<Vec<Message>> {
    let mut conn = db.conn(op).await?;
    messages::page(&mut conn, chat, Some(after), Some(upto + 1), upto - after).await
}

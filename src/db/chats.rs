//! Conversations (direct and group) and their members.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{friends, messages};
use crate::error::{AppError, AppResult};
use crate::ids::{ChatId, UserId};

pub use crate::protocol::wire::{Chat, ChatKind, Member};

/// `conversation_kind` as PostgreSQL stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "conversation_kind", rename_all = "lowercase")]
pub enum Kind {
    Direct,
    Group,
}

impl From<Kind> for ChatKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Direct => ChatKind::Direct,
            Kind::Group => ChatKind::Group,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ChatRow {
    id: ChatId,
    kind: Kind,
    title: Option<String>,
    created_by: UserId,
    last_seq: i64,
    last_read_seq: i64,
    created_at: DateTime<Utc>,
    unread: i64,
}

pub async fn is_member(conn: &mut PgConnection, chat: ChatId, user: UserId) -> AppResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM conversation_members WHERE conversation_id = $1 AND user_id = $2)",
    )
    .bind(chat)
    .bind(user)
    .fetch_one(conn)
    .await?)
}

/// Fails with `NotFound` unless `user` belongs to `chat`, so a chat's existence is not revealed.
pub async fn ensure_member(conn: &mut PgConnection, chat: ChatId, user: UserId) -> AppResult<()> {
    if is_member(conn, chat, user).await? {
        Ok(())
    } else {
        Err(AppError::NotFound)
    }
}

pub async fn member_ids(conn: &mut PgConnection, chat: ChatId) -> AppResult<Vec<UserId>> {
    Ok(
        sqlx::query_scalar("SELECT user_id FROM conversation_members WHERE conversation_id = $1")
            .bind(chat)
            .fetch_all(conn)
            .await?,
    )
}

/// The members of `chat` who hear what `from` does there besides messages (typing, read
/// markers): all but those who blocked `from`.
pub async fn audience(
    conn: &mut PgConnection,
    chat: ChatId,
    from: UserId,
) -> AppResult<Vec<UserId>> {
    Ok(sqlx::query_scalar(
        "SELECT m.user_id FROM conversation_members m WHERE m.conversation_id = $1 \
         AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = m.user_id AND b.blocked_id = $2)",
    )
    .bind(chat)
    .bind(from)
    .fetch_all(conn)
    .await?)
}

/// The chats `user` belongs to, newest activity first; `only` narrows it to one chat.
async fn load(conn: &mut PgConnection, user: UserId, only: Option<ChatId>) -> AppResult<Vec<Chat>> {
    let rows: Vec<ChatRow> = sqlx::query_as(
        "SELECT c.id, c.kind, c.title, c.created_by, c.last_seq, m.last_read_seq, c.created_at, \
                (SELECT count(*) FROM (SELECT 1 FROM messages u \
                     WHERE u.conversation_id = c.id AND u.seq > m.last_read_seq \
                       AND u.kind = 'message' AND u.sender_id <> $1 LIMIT $3) n) AS unread \
         FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id \
         WHERE m.user_id = $1 AND ($2::bigint IS NULL OR c.id = $2)",
    )
    .bind(user)
    .bind(only)
    .bind(Chat::UNREAD_MAX)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<ChatId> = rows.iter().map(|r| r.id).collect();
    let members: Vec<(ChatId, Member)> =
        sqlx::query_as::<_, (ChatId, UserId, String, String, i64)>(
            "SELECT m.conversation_id, u.id, u.username, u.display_name, m.last_read_seq \
         FROM conversation_members m JOIN users u ON u.id = m.user_id \
         WHERE m.conversation_id = ANY($1) ORDER BY m.conversation_id, u.id",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(chat, id, username, display_name, last_read_seq)| {
            (
                chat,
                Member {
                    id,
                    username,
                    display_name,
                    last_read_seq,
                },
            )
        })
        .collect();
    let mut by_chat: HashMap<ChatId, Vec<Member>> = HashMap::new();
    for (chat, member) in members {
        by_chat.entry(chat).or_default().push(member);
    }
    let mut last = messages::last_messages(conn, &ids).await?;
    let mut chats: Vec<Chat> = rows
        .into_iter()
        .map(|r| {
            let last_message = last.remove(&r.id);
            Chat {
                members: by_chat.remove(&r.id).unwrap_or_default(),
                unread: r.unread,
                id: r.id,
                kind: r.kind.into(),
                title: r.title,
                created_by: r.created_by,
                last_seq: r.last_seq,
                last_read_seq: r.last_read_seq,
                last_activity_at: last_message.as_ref().map_or(r.created_at, |m| m.created_at),
                last_message,
                created_at: r.created_at,
            }
        })
        .collect();
    chats.sort_by_key(|c| std::cmp::Reverse((c.last_activity_at, c.id)));
    Ok(chats)
}

pub async fn list(conn: &mut PgConnection, user: UserId) -> AppResult<Vec<Chat>> {
    load(conn, user, None).await
}

pub async fn get(conn: &mut PgConnection, user: UserId, chat: ChatId) -> AppResult<Chat> {
    load(conn, user, Some(chat))
        .await?
        .pop()
        .ok_or(AppError::NotFound)
}

/// Returns the direct chat between two friends, creating it when needed; `true` when created.
/// Run it in a transaction.
pub async fn get_or_create_direct(
    conn: &mut PgConnection,
    user: UserId,
    other: UserId,
) -> AppResult<(Chat, bool)> {
    if user == other {
        return Err(AppError::invalid(
            "user_id: a direct chat needs another user",
        ));
    }
    if !friends::are_friends(conn, user, other).await? {
        return Err(AppError::Forbidden(
            "you can only start a direct chat with a friend".into(),
        ));
    }
    let (low, high) = if user < other {
        (user, other)
    } else {
        (other, user)
    };
    let created: Option<ChatId> = sqlx::query_scalar(
        "INSERT INTO conversations (kind, created_by, direct_low, direct_high) \
         VALUES ('direct', $1, $2, $3) ON CONFLICT (direct_low, direct_high) DO NOTHING RETURNING id",
    )
    .bind(user)
    .bind(low)
    .bind(high)
    .fetch_optional(&mut *conn)
    .await?;
    let id = match created {
        Some(id) => {
            add_members(conn, id, &[low, high]).await?;
            id
        }
        None => {
            sqlx::query_scalar(
                "SELECT id FROM conversations WHERE direct_low = $1 AND direct_high = $2",
            )
            .bind(low)
            .bind(high)
            .fetch_one(&mut *conn)
            .await?
        }
    };
    Ok((get(conn, user, id).await?, created.is_some()))
}

/// Creates a group chat of `creator` and `members`, each of whom must be the creator's friend.
/// Run it in a transaction.
pub async fn create_group(
    conn: &mut PgConnection,
    creator: UserId,
    title: &str,
    members: &[UserId],
    max_members: i64,
) -> AppResult<Chat> {
    let mut others: Vec<UserId> = members.iter().copied().filter(|&m| m != creator).collect();
    others.sort_unstable();
    others.dedup();
    if others.len() as i64 + 1 > max_members {
        return Err(group_full(max_members));
    }
    if friends::count_friends_among(conn, creator, &others).await? != others.len() as i64 {
        return Err(AppError::Forbidden(
            "member_ids: every member must be your friend".into(),
        ));
    }
    let id: ChatId = sqlx::query_scalar(
        "INSERT INTO conversations (kind, title, created_by) VALUES ('group', $1, $2) RETURNING id",
    )
    .bind(title)
    .bind(creator)
    .fetch_one(&mut *conn)
    .await?;
    others.push(creator);
    add_members(conn, id, &others).await?;
    get(conn, creator, id).await
}

/// A group chat at its cap.
pub fn group_full(max_members: i64) -> AppError {
    AppError::conflict(
        crate::protocol::ErrorCode::GroupFull,
        format!("a group holds at most {max_members} members"),
    )
}

/// `chat` as a member who just joined sees it (nothing read yet), for announcing it to new
/// members: the same for all of them, so it is built and serialised once.
pub async fn for_newcomers(conn: &mut PgConnection, chat: ChatId) -> AppResult<Chat> {
    let anyone: UserId = sqlx::query_scalar(
        "SELECT user_id FROM conversation_members WHERE conversation_id = $1 LIMIT 1",
    )
    .bind(chat)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(AppError::NotFound)?;
    let mut view = get(conn, anyone, chat).await?;
    view.last_read_seq = 0;
    view.unread = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM messages \
         WHERE conversation_id = $1 AND kind = 'message' LIMIT $2) n",
    )
    .bind(chat)
    .bind(Chat::UNREAD_MAX)
    .fetch_one(conn)
    .await?;
    Ok(view)
}

pub async fn add_members(conn: &mut PgConnection, chat: ChatId, users: &[UserId]) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO conversation_members (conversation_id, user_id) SELECT $1, unnest($2::bigint[])",
    )
    .bind(chat)
    .bind(users)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the caller's read marker forward to `seq`; true when it moved (a marker never moves
/// back, and one that stays put is not announced).
pub async fn mark_read(
    conn: &mut PgConnection,
    chat: ChatId,
    user: UserId,
    seq: i64,
) -> AppResult<bool> {
    let last_seq: Option<i64> = sqlx::query_scalar(
        "SELECT c.last_seq FROM conversations c JOIN conversation_members m \
         ON m.conversation_id = c.id AND m.user_id = $2 WHERE c.id = $1",
    )
    .bind(chat)
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?;
    let last_seq = last_seq.ok_or(AppError::NotFound)?;
    if seq < 0 || seq > last_seq {
        return Err(AppError::invalid(format!(
            "seq: must be between 0 and the chat's last seq ({last_seq})"
        )));
    }
    let moved = sqlx::query(
        "UPDATE conversation_members SET last_read_seq = GREATEST(last_read_seq, $3) \
         WHERE conversation_id = $1 AND user_id = $2 AND last_read_seq < $3",
    )
    .bind(chat)
    .bind(user)
    .bind(seq)
    .execute(conn)
    .await?;
    Ok(moved.rows_affected() == 1)
}

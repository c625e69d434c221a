//! Tokens and sessions revoked before they expire. PostgreSQL holds the list (so every server learns of a
//! logout); each server mirrors it in memory, so checking a token costs a map lookup, and reads
//! the rows added since its last look every few seconds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{Db, Op};
use crate::error::AppResult;
use crate::ids::UserId;

/// How often a server reads the revocations other servers made.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Revocations read per query.
const PAGE: i64 = 10_000;

/// One revocation: whose token, and until when it would have been valid.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Revocation {
    pub id: i64,
    pub jti: Uuid,
    pub user_id: UserId,
    pub expires_at: DateTime<Utc>,
    /// Set for a revocation of every token of the app's the user was issued up to then.
    pub issued_before: Option<DateTime<Utc>>,
}

impl Revocation {
    /// The token or session whose sockets close.
    pub fn closes(&self) -> Uuid {
        match self.issued_before {
            Some(_) => super::external_session(self.user_id),
            None => self.jti,
        }
    }
}

#[derive(Default)]
pub struct Revoked {
    jtis: DashMap<Uuid, DateTime<Utc>>,
    /// Per user, the newest `issued_before` (Unix seconds): the app's tokens issued up to then
    /// are refused.
    cutoffs: DashMap<UserId, i64>,
    /// The newest row read, so the next read takes only what came after.
    seen: std::sync::atomic::AtomicI64,
}

impl Revoked {
    pub fn contains(&self, jti: &Uuid) -> bool {
        self.jtis.contains_key(jti)
    }

    /// Whether `session`, of the app's own tokens, was issued before a revocation of them.
    pub fn cut_off(&self, session: &super::Session) -> bool {
        session.sid == super::external_session(session.user)
            && self
                .cutoffs
                .get(&session.user)
                .is_some_and(|c| *c >= session.issued as i64)
    }

    fn learn(&self, r: &Revocation) {
        match r.issued_before {
            Some(at) => {
                self.cutoffs
                    .entry(r.user_id)
                    .and_modify(|c| *c = (*c).max(at.timestamp()))
                    .or_insert(at.timestamp());
            }
            None => {
                self.jtis.insert(r.jti, r.expires_at);
            }
        }
        self.seen
            .fetch_max(r.id, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records a revocation of token or session `id` in the database and here.
    pub async fn revoke(
        &self,
        conn: &mut PgConnection,
        user: UserId,
        id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> AppResult<()> {
        self.revoke_all(conn, user, &[id], expires_at).await
    }

    /// Records revocations of the tokens or sessions `ids`, useless after `expires_at`.
    pub async fn revoke_all(
        &self,
        conn: &mut PgConnection,
        user: UserId,
        ids: &[Uuid],
        expires_at: DateTime<Utc>,
    ) -> AppResult<()> {
        for id in ids {
            self.jtis.insert(*id, expires_at);
        }
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, user_id, expires_at)              SELECT unnest($1::uuid[]), $2, $3 ON CONFLICT (jti) DO NOTHING",
        )
        .bind(ids)
        .bind(user)
        .bind(expires_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Revokes every token of the app's that `user` was issued up to `at` (a second's
    /// resolution: one issued in that second is refused too), here and on every node.
    pub async fn revoke_issued_before(
        &self,
        conn: &mut PgConnection,
        user: UserId,
        at: DateTime<Utc>,
    ) -> AppResult<()> {
        let row: Revocation = sqlx::query_as(
            "INSERT INTO revoked_tokens (jti, user_id, expires_at, issued_before) \
             VALUES ($1, $2, $3 + interval '1 year', $3) \
             RETURNING id, jti, user_id, expires_at, issued_before",
        )
        .bind(Uuid::new_v4())
        .bind(user)
        .bind(at)
        .fetch_one(conn)
        .await?;
        let seen = self.seen.load(std::sync::atomic::Ordering::Relaxed);
        self.learn(&row);
        // Rows of other servers between the last read and this one are still to be read.
        self.seen.store(seen, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Reads every unexpired revocation newer than the last read, a page at a time; returns
    /// them, so their sockets can close. At startup that is all of them, so a token revoked
    /// before the server started is refused from its first request.
    pub async fn refresh(&self, conn: &mut PgConnection) -> AppResult<Vec<Revocation>> {
        let mut read = Vec::new();
        loop {
            let seen = self.seen.load(std::sync::atomic::Ordering::Relaxed);
            let rows: Vec<Revocation> = sqlx::query_as(
                "SELECT id, jti, user_id, expires_at, issued_before FROM revoked_tokens \
                 WHERE id > $1 AND expires_at > now() ORDER BY id LIMIT $2",
            )
            .bind(seen)
            .bind(PAGE)
            .fetch_all(&mut *conn)
            .await?;
            for r in &rows {
                self.learn(r);
            }
            let full = rows.len() as i64 == PAGE;
            read.extend(rows);
            if !full {
                break;
            }
        }
        let now = Utc::now();
        self.jtis.retain(|_, expires| *expires > now);
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < now()")
            .execute(&mut *conn)
            .await?;
        crate::db::sessions::sweep(conn).await?;
        Ok(read)
    }

    /// Keeps the mirror current until `stop`; `on_new` hears of each revocation read.
    pub async fn follow(&self, db: Db, stop: CancellationToken, on_new: impl Fn(&Revocation)) {
        let mut every = tokio::time::interval(REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let read = match db.conn(Op::Accounts).await {
                Ok(mut conn) => match self.refresh(&mut conn).await {
                    Ok(rows) => conn.done().await.map(|()| rows),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match read {
                Ok(rows) => rows.iter().for_each(&on_new),
                Err(e) => tracing::warn!(error = %e, "could not read revoked tokens"),
            }
        }
    }
}

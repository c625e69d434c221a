//! The epoch of the message history (see the migration `history_epoch`): read at startup and
//! every few seconds, renewed when the database is not the one it was (a restore, a promotion)
//! or when an operator says so.

use sqlx::{Acquire, PgConnection};
use uuid::Uuid;

use crate::error::AppResult;

/// What identifies the database the history lives in: its cluster's system identifier (when
/// the role may read it), the timeline it writes on and the database's oid. A restore into a
/// new database or cluster, a point-in-time recovery and a promotion each change it.
async fn fingerprint(conn: &mut PgConnection) -> AppResult<String> {
    let system: Option<String> =
        sqlx::query_scalar("SELECT system_identifier::text FROM pg_control_system()")
            .fetch_optional(&mut *conn)
            .await
            .ok()
            .flatten();
    let place: String = sqlx::query_scalar(
        "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) || ':' || \
                (SELECT oid FROM pg_database WHERE datname = current_database())::text",
    )
    .fetch_one(conn)
    .await?;
    Ok(format!("{}:{place}", system.as_deref().unwrap_or("-")))
}

/// The current epoch, renewed first when the database's fingerprint changed. The first
/// server on a new database sets it without a rewind.
pub async fn current(conn: &mut PgConnection) -> AppResult<Uuid> {
    let fingerprint = fingerprint(conn).await?;
    let mut tx = conn.begin().await?;
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT epoch, fingerprint FROM history FOR UPDATE")
            .fetch_optional(&mut *tx)
            .await?;
    let epoch = match row {
        None => {
            sqlx::query_scalar(
                "INSERT INTO history (epoch, fingerprint) VALUES (gen_random_uuid(), $1) \
                 ON CONFLICT (only_row) DO UPDATE SET only_row = true RETURNING epoch",
            )
            .bind(&fingerprint)
            .fetch_one(&mut *tx)
            .await?
        }
        Some((epoch, seen)) if seen == fingerprint => epoch,
        Some(_) => {
            tracing::warn!("the database is not the one the history was written in (a restore or a promotion): starting a new epoch");
            renew_in(&mut tx, &fingerprint).await?
        }
    };
    tx.commit().await?;
    Ok(epoch)
}

/// The epoch, read without a lock while the fingerprint is the one stored (the check every few
/// seconds costs two or three reads); renewed as [`current`] does when it is not.
pub async fn check(conn: &mut PgConnection) -> AppResult<Uuid> {
    let now = fingerprint(conn).await?;
    let stored: Option<(Uuid, String)> = sqlx::query_as("SELECT epoch, fingerprint FROM history")
        .fetch_optional(&mut *conn)
        .await?;
    match stored {
        Some((epoch, seen)) if seen == now => Ok(epoch),
        _ => current(conn).await,
    }
}

/// Starts a new epoch whatever the fingerprint: after a restore into the same database.
pub async fn renew(conn: &mut PgConnection) -> AppResult<Uuid> {
    let fingerprint = fingerprint(conn).await?;
    let mut tx = conn.begin().await?;
    let epoch = renew_in(&mut tx, &fingerprint).await?;
    tx.commit().await?;
    Ok(epoch)
}

async fn renew_in(conn: &mut PgConnection, fingerprint: &str) -> AppResult<Uuid> {
    // Every chat's history is trusted up to where it stands now, and no further than any
    // earlier rewind.
    sqlx::query(
        "UPDATE conversations SET rewound_to = least(coalesce(rewound_to, last_seq), last_seq)",
    )
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar(
        "INSERT INTO history (epoch, fingerprint) VALUES (gen_random_uuid(), $1) \
         ON CONFLICT (only_row) DO UPDATE SET epoch = EXCLUDED.epoch, \
             fingerprint = EXCLUDED.fingerprint, changed_at = now() RETURNING epoch",
    )
    .bind(fingerprint)
    .fetch_one(conn)
    .await?)
}

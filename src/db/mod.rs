//! Everything that touches PostgreSQL: connecting at startup, migrations, the pool guard every
//! query passes through, and one module of queries per table family.

pub mod attachments;
pub mod blocks;
pub mod chats;
pub mod entries;
pub mod friends;
mod guard;
pub mod history;
pub mod members;
pub mod messages;
pub mod presence;
pub mod replica;
pub mod search;
pub mod service;
pub mod sessions;
pub mod target;
pub mod users;
pub mod webhooks;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;
use tokio::time::Instant;

use crate::config::Config;
pub use guard::{Db, DbConn, Op};

/// The schema this binary speaks, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Opens the pool, retrying with backoff while the database is unreachable, and giving up once
/// the configured connect timeout has passed. Errors name the host, port and database only.
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    if config.database_targets.hosts.len() > 1 {
        return connect_to_one_of(config).await;
    }
    let pool = open(
        config,
        &config.database,
        config.db_max_connections,
        "DATABASE_URL",
    )
    .await?;
    Ok(pool)
}

/// A pool past any pooler, for migrations, LISTEN and the command line's tools: on
/// XFCHAT_DATABASE_DIRECT_URL behind a pooler in transaction mode (sessions there are not
/// ours), otherwise on DATABASE_URL as [`connect`] opens it.
pub async fn connect_direct(config: &Config) -> anyhow::Result<PgPool> {
    match &config.database_routes.direct {
        Some(direct) if config.database_routes.pooled => {
            open(config, direct, 2, "XFCHAT_DATABASE_DIRECT_URL").await
        }
        _ => connect(config).await,
    }
}

/// A pool of `max` connections on `options`, once one connection has been made within the
/// connect timeout; `setting` names where the options came from.
async fn open(
    config: &Config,
    options: &sqlx::postgres::PgConnectOptions,
    max: u32,
    setting: &str,
) -> anyhow::Result<PgPool> {
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    );
    let deadline = Instant::now() + config.db_connect_timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let failure =
            match tokio::time::timeout(remaining, PgConnection::connect_with(options)).await {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    break;
                }
                // The server answered and said no (bad password, no such database): retrying
                // will not help.
                Ok(Err(err @ sqlx::Error::Database(_))) => {
                    bail!("cannot connect to the database at {target} ({setting}): {err}")
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => "timed out".to_owned(),
            };
        if Instant::now() + backoff >= deadline {
            bail!(
                "cannot reach the database at {target} ({setting}) within {}s: {failure}",
                config.db_connect_timeout.as_secs()
            );
        }
        tracing::warn!(database = %target, error = %failure, "database not reachable yet, retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(config.db_permit_timeout)
        .connect_with(options.clone())
        .await
        .with_context(|| format!("cannot open the connection pool to {target} ({setting})"))
}

/// A pool on the read replica, opened lazily: a replica that is down at start only sends reads
/// to the primary until it answers.
pub fn connect_replica(config: &Config) -> Option<PgPool> {
    let replica = config.database_routes.replica.as_ref()?;
    Some(
        PgPoolOptions::new()
            .max_connections(config.db_max_connections)
            // A replica that does not answer costs a read this long, once: then it rests.
            .acquire_timeout(config.db_permit_timeout.min(Duration::from_secs(1)))
            .connect_lazy_with(replica.clone()),
    )
}

/// With several hosts: the pool on the first that answers and suits, retrying as above.
async fn connect_to_one_of(config: &Config) -> anyhow::Result<PgPool> {
    let targets = &config.database_targets;
    let deadline = Instant::now() + config.db_connect_timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Some(host) = targets.pick(remaining.min(Duration::from_secs(5))).await {
            tracing::info!(
                host = host.get_host(),
                port = host.get_port(),
                "connecting to this host of DATABASE_URL"
            );
            return PgPoolOptions::new()
                .max_connections(config.db_max_connections)
                .acquire_timeout(config.db_permit_timeout)
                .connect_with(host.clone())
                .await
                .context("cannot open the connection pool");
        }
        let wanted = if targets.read_write {
            " and takes writes"
        } else {
            ""
        };
        if Instant::now() + backoff >= deadline {
            bail!(
                "no host of DATABASE_URL answers{wanted} within {}s ({} hosts)",
                config.db_connect_timeout.as_secs(),
                targets.hosts.len()
            );
        }
        tracing::warn!("no host of DATABASE_URL answers{wanted} yet, retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Applies pending migrations. sqlx holds a PostgreSQL advisory lock while it migrates, so
/// servers starting together apply each migration once.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    if let Err(err) = MIGRATOR.run(pool).await {
        let applied = applied_versions(pool).await.unwrap_or_default();
        let failed = MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .find(|m| !applied.contains(&m.version));
        return Err(match failed {
            Some(m) => anyhow!("migration {} ({}) failed: {err}", m.version, m.description),
            None => anyhow!("migrations failed: {err}"),
        });
    }
    Ok(())
}

/// For `serve --no-migrate`: fails unless the database holds exactly this binary's migrations.
pub async fn ensure_current(pool: &PgPool) -> anyhow::Result<()> {
    let applied = applied_versions(pool).await.unwrap_or_default();
    let known: BTreeSet<i64> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    if let Some(missing) = known.difference(&applied).next() {
        bail!("the database schema is behind this binary (migration {missing} is not applied); run `xfchat migrate` first");
    }
    if let Some(unknown) = applied.difference(&known).next() {
        bail!("the database has migration {unknown}, which this binary does not know; run a newer xfchat");
    }
    Ok(())
}

async fn applied_versions(pool: &PgPool) -> Result<BTreeSet<i64>, sqlx::Error> {
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?;
    Ok(versions.into_iter().collect())
}

//! Startup and shutdown: connect, migrate, bind, serve, and stop cleanly on a signal.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::external::ExternalTokens;
use crate::auth::Tokens;
use crate::bus::{self, Bus};
use crate::config::{Cli, Command, Config};
use crate::db::{self, Db, Op};
use crate::http::{self, AppState};
use crate::hub::Hub;
use crate::throttle::Throttles;

/// Whether startup applies migrations or only checks that the schema is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    Apply,
    RequireCurrent,
}

/// A running server: its address, and the handle that stops it.
pub struct Server {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Connects to the database, brings the schema up to date and starts serving.
    pub async fn start(config: Config, migrations: Migrations) -> anyhow::Result<Server> {
        let pool = db::connect(&config).await?;
        {
            let direct = db::connect_direct(&config).await?;
            match migrations {
                Migrations::Apply => db::migrate(&direct).await?,
                Migrations::RequireCurrent => db::ensure_current(&direct).await?,
            }
            if config.database_routes.pooled {
                direct.close().await;
            }
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let admin = match config.admin_listen {
            Some(at) => Some(
                TcpListener::bind(at)
                    .await
                    .with_context(|| format!("cannot listen on {at} (XFCHAT_ADMIN_LISTEN)"))?,
            ),
            None => None,
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
        let database = config.database_display();
        let mut db = Db::new(pool.clone(), config.db_permits, config.db_permit_timeout);
        if config.database_routes.pooled {
            db = db.pinned(config.database_routes.statement_timeout_ms);
        }
        if let Some(replica) = db::connect_replica(&config) {
            db = db.with_replica(replica, config.db_permits);
        }
        let throttles = Throttles::new(&config.throttle);
        // The one cancellation tree: the hub's token is a child of this one.
        let shutdown = CancellationToken::new();
        let node = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", host_name(), addr.port()));
        let prometheus = crate::metrics::install(&node);
        let seal = bus::Seal::new(config.jwt_secret.expose());
        let listen_at = config.database_routes.direct.clone();
        let bus = bus::connect(
            &config.bus,
            &db,
            listen_at,
            &node,
            seal,
            config.bus_linger,
            &shutdown,
        )
        .await
        .with_context(|| format!("cannot reach the bus at {:?}", config.bus))?;
        let hub = Hub::new(
            db.clone(),
            &config,
            throttles.clone(),
            bus.as_ref().map(Bus::publisher),
            &shutdown,
        );
        if let Some(bus) = bus {
            bus.listen(hub.clone());
        }
        let bus_kind = config.bus.clone();
        let tokens = Tokens::new(config.jwt_secret.expose(), config.token_ttl);
        // The history's epoch, renewed first if this database is not the one it was written in.
        {
            let mut conn = db
                .conn(Op::Chats)
                .await
                .context("read the history's epoch")?;
            let epoch = crate::db::history::current(&mut conn)
                .await
                .context("read the history's epoch")?;
            conn.done().await.context("read the history's epoch")?;
            hub.set_epoch(epoch);
        }
        tokio::spawn(watch_epoch(db.clone(), hub.clone(), shutdown.clone()));
        hub.start_presence(shutdown.clone());
        tokio::spawn(sweep_uploads(db.clone(), shutdown.clone()));
        tokio::spawn(
            config
                .database_targets
                .clone()
                .follow(pool.clone(), shutdown.clone()),
        );
        // Revocations made before this server started apply from its first request.
        {
            let mut conn = db.conn(Op::Accounts).await.context("read revoked tokens")?;
            tokens
                .revoked()
                .refresh(&mut conn)
                .await
                .context("read revoked tokens")?;
            conn.done().await.context("read revoked tokens")?;
        }
        let external = config
            .integrations
            .external
            .clone()
            .map(ExternalTokens::new)
            .transpose()
            .context("set up the app's tokens")?
            .map(Arc::new);
        if let Some(webhook) = config.integrations.webhook.clone() {
            tokio::spawn(crate::webhook::run(db.clone(), webhook, shutdown.clone()));
        }
        let state = AppState {
            external,
            hub: hub.clone(),
            db: db.clone(),
            metrics: prometheus,
            tokens: tokens.clone(),
            throttles: throttles.clone(),
            config: Arc::new(config),
        };
        let grace = state.config.shutdown_grace;
        tokio::spawn(crate::telemetry::watch_database(
            db.clone(),
            state.config.db_permits,
            shutdown.clone(),
        ));
        tokio::spawn(throttles.sweep(shutdown.clone()));
        tokio::spawn(crate::metrics::upkeep(
            state.metrics.clone(),
            shutdown.clone(),
        ));
        // Logouts on other servers close this server's sockets of those tokens too.
        tokio::spawn({
            let (db, stop, hub) = (db.clone(), shutdown.clone(), hub.clone());
            async move {
                let revoked = tokens.revoked();
                revoked
                    .follow(db, stop, |r| hub.revoke(r.user_id, r.closes()))
                    .await
            }
        });
        let limits = state.config.http.clone();
        let admin = admin.map(|l| (l, http::admin_router(state.clone())));
        let app = http::router(state);
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            // In-flight requests and sends get `grace` to finish; then the rest are cut off.
            // Upgraded sockets are not tracked by the HTTP server, so the hub closes them itself.
            tokio::join!(
                http::serve(listener, app, limits.clone(), stop.clone(), grace),
                async {
                    if let Some((listener, admin)) = admin {
                        http::serve(listener, admin, limits, stop.clone(), grace).await
                    }
                },
                async {
                    stop.cancelled().await;
                    hub.close_connections(grace).await
                }
            );
            pool.close().await;
            Ok(())
        });
        tracing::info!(%addr, ?admin_addr, %database, %node, ?bus_kind, "xfchat serving");
        Ok(Server {
            addr,
            admin_addr,
            shutdown,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where /metrics is served apart from the public address, when XFCHAT_ADMIN_LISTEN is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, closes the pool.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("server task failed")?
    }
}

/// Runs the command the command line asked for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.settings.validate()?;
    match cli.command {
        Some(Command::Doctor) => crate::doctor::run(&config).await,
        Some(Command::Epoch { renew }) => {
            let pool = db::connect_direct(&config).await?;
            let mut conn = pool.acquire().await?;
            let epoch = if renew {
                db::history::renew(&mut conn).await?
            } else {
                db::history::current(&mut conn).await?
            };
            println!("{epoch}");
            Ok(())
        }
        Some(Command::Migrate { undo_to }) => {
            let pool = db::connect_direct(&config).await?;
            match undo_to {
                Some(version) => {
                    db::MIGRATOR.undo(&pool, version).await?;
                    tracing::info!(database = %config.database_display(), version, "migrations undone");
                }
                None => {
                    db::migrate(&pool).await?;
                    tracing::info!(database = %config.database_display(), "migrations applied");
                }
            }
            pool.close().await;
            Ok(())
        }
        command => {
            let no_migrate = matches!(command, Some(Command::Serve { no_migrate: true }));
            let migrations = if no_migrate {
                Migrations::RequireCurrent
            } else {
                Migrations::Apply
            };
            let server = Server::start(config, migrations).await?;
            crate::shutdown::signal().await;
            tracing::info!("shutdown signal received");
            server.stop().await
        }
    }
}

/// The machine's name, for the default node id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// How often a server checks that the database is still the one its history was written in.
const EPOCH_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Follows the history's epoch until `stop`: a failover or a restore under a running server
/// starts a new one (as does `xfchat epoch --renew`), and the hub closes its sockets so that
/// clients resume against it.
/// Drops uploads left unfinished for a day, once an hour (and at startup).
async fn sweep_uploads(db: Db, stop: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let swept = async {
            let mut conn = db.conn(Op::Attachments).await?;
            let n = crate::db::attachments::sweep(&mut conn).await?;
            conn.done().await?;
            Ok::<_, crate::error::AppError>(n)
        };
        match swept.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "dropped unfinished uploads"),
            Err(e) => tracing::debug!(error = %e, "could not sweep unfinished uploads"),
        }
    }
}

async fn watch_epoch(db: Db, hub: Arc<crate::hub::Hub>, stop: CancellationToken) {
    let mut every = tokio::time::interval(EPOCH_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let checked = async {
            let mut conn = db.conn(Op::Chats).await?;
            let epoch = crate::db::history::check(&mut conn).await?;
            conn.done().await?;
            hub.set_epoch(epoch);
            Ok::<_, crate::error::AppError>(())
        };
        if let Err(e) = checked.await {
            tracing::debug!(error = %e, "could not check the history's epoch");
        }
    }
}

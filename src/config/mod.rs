//! One typed configuration, read from the environment with command-line flags overriding it,
//! validated once at startup. A bad setting stops the process with one line that names it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use sqlx::postgres::PgConnectOptions;

mod integrations;
pub use integrations::{ExternalJwtConfig, IntegrationSettings, Integrations, WebhookConfig};

/// The `xfchat` command line.
#[derive(Debug, Parser)]
#[command(
    name = "xfchat",
    version,
    about = "XFChat: a realtime chat hub backed by PostgreSQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP and WebSocket clients (the default).
    Serve {
        /// Refuse to start when the database is behind this binary's migrations
        /// instead of applying them.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply the embedded migrations and exit.
    Migrate {
        /// Instead, run down migrations until VERSION is the newest applied (0: all of them).
        #[arg(long, value_name = "VERSION")]
        undo_to: Option<i64>,
    },
    /// Check a live database: reachability, schema version and data integrity.
    Doctor,
    /// Print the history's epoch; with --renew, start a new one (after restoring a backup into
    /// the database it was taken from: clients then set their positions back).
    Epoch {
        #[arg(long)]
        renew: bool,
    },
}

/// How nodes on one database hear of each other's messages and events. Its `Debug` shows a
/// NATS URL without credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum BusKind {
    /// PostgreSQL `LISTEN`/`NOTIFY` on the database the nodes share.
    Postgres,
    /// Core NATS subjects under `prefix` on the server at `url` (`nats://` or `tls://`).
    Nats { url: String, prefix: String },
    /// None: a single node, whose commits announce nothing.
    Off,
}

impl BusKind {
    fn parse(given: &str, prefix: &str) -> Result<BusKind, ConfigError> {
        let token = |t: &str| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        };
        if prefix.len() > 64 || !prefix.split('.').all(token) {
            return Err(invalid(format!(
                "XFCHAT_BUS_PREFIX must be at most 64 letters, digits, '_' or '-' in tokens \
                 separated by '.', got {prefix:?}"
            )));
        }
        match given {
            "postgres" => Ok(BusKind::Postgres),
            "off" => Ok(BusKind::Off),
            url if url::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "nats" | "tls") && u.host().is_some()) =>
            {
                Ok(BusKind::Nats {
                    url: url.to_owned(),
                    prefix: prefix.to_owned(),
                })
            }
            _ if given.contains('@') => Err(invalid(
                "XFCHAT_BUS must be postgres, off or a nats:// URL with a host",
            )),
            _ => Err(invalid(format!(
                "XFCHAT_BUS must be postgres, off or a nats:// URL with a host, got {given:?}"
            ))),
        }
    }
}

impl std::fmt::Debug for BusKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusKind::Postgres => f.write_str("postgres"),
            BusKind::Off => f.write_str("off"),
            BusKind::Nats { url, prefix } => match url::Url::parse(url) {
                Ok(u) => write!(
                    f,
                    "{}://{}:{} ({prefix}.*)",
                    u.scheme(),
                    u.host_str().unwrap_or_default(),
                    u.port().unwrap_or(4222)
                ),
                Err(_) => f.write_str("nats"),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Raw settings as given; [`Settings::validate`] turns them into a [`Config`]. Its `Debug`
/// hides the database URL's password and the JWT secret.
#[derive(Clone, Args)]
pub struct Settings {
    /// PostgreSQL URL (required).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// A read replica's URL (optional): history and catch-up reads go there, and to the
    /// primary whenever the replica has not reached the seq they need.
    #[arg(
        long,
        env = "XFCHAT_DATABASE_READ_URL",
        hide_env_values = true,
        global = true
    )]
    pub database_read_url: Option<String>,
    /// `transaction` when DATABASE_URL is a pooler in transaction mode (PgBouncer): every
    /// unit of work is then one transaction, and LISTEN and migrations use
    /// XFCHAT_DATABASE_DIRECT_URL. `none` (the default) for a direct connection.
    #[arg(
        long,
        env = "XFCHAT_DATABASE_POOLER",
        value_enum,
        default_value = "none",
        global = true
    )]
    pub database_pooler: Pooler,
    /// A direct connection to the primary, past the pooler, for LISTEN and migrations;
    /// required with XFCHAT_DATABASE_POOLER=transaction.
    #[arg(
        long,
        env = "XFCHAT_DATABASE_DIRECT_URL",
        hide_env_values = true,
        global = true
    )]
    pub database_direct_url: Option<String>,
    /// Secret that signs access tokens, at least 32 bytes (required).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
    /// A second address that serves only /metrics, /healthz and /readyz; when set, /metrics is
    /// not served on the public address.
    #[arg(long, env = "XFCHAT_ADMIN_LISTEN", global = true)]
    pub admin_listen: Option<String>,
    /// Address for HTTP and WebSocket.
    #[arg(
        long,
        env = "XFCHAT_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: String,
    /// Log format: text or json.
    #[arg(
        long,
        env = "XFCHAT_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Maximum connections in the database pool.
    #[arg(
        long,
        env = "XFCHAT_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,
    /// Permits for user traffic; below the pool maximum so readiness keeps a connection.
    /// Defaults to the pool maximum minus one.
    #[arg(long, env = "XFCHAT_DB_PERMITS", global = true)]
    pub db_permits: Option<u32>,
    /// How long a request waits for a database permit before it is answered `overloaded`.
    #[arg(
        long,
        env = "XFCHAT_DB_PERMIT_TIMEOUT_MS",
        default_value_t = 2000,
        global = true
    )]
    pub db_permit_timeout_ms: u64,
    /// Longest a single database statement may run before PostgreSQL cancels it, so a stuck
    /// query cannot hold a pool connection and its permit for ever.
    #[arg(
        long,
        env = "XFCHAT_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub db_statement_timeout_ms: u64,
    /// How long startup keeps trying to reach the database.
    #[arg(
        long,
        env = "XFCHAT_DB_CONNECT_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub db_connect_timeout_secs: u64,
    /// Lifetime of an access token; a socket closes (4001) when its token expires.
    #[arg(
        long,
        env = "XFCHAT_TOKEN_TTL_SECS",
        default_value_t = 900,
        global = true
    )]
    pub token_ttl_secs: u64,
    /// Members a group chat holds at most, creator included.
    #[arg(
        long,
        env = "XFCHAT_GROUP_MAX_MEMBERS",
        default_value_t = 1000,
        global = true
    )]
    pub group_max_members: usize,
    /// How long after a declined friend request its sender cannot ask the same person again.
    #[arg(
        long,
        env = "XFCHAT_DECLINED_COOLDOWN_SECS",
        default_value_t = 86_400,
        global = true
    )]
    pub declined_cooldown_secs: u64,
    /// How long a session lives past its last refresh.
    #[arg(
        long,
        env = "XFCHAT_REFRESH_TTL_SECS",
        default_value_t = 30 * 86_400,
        global = true
    )]
    pub refresh_ttl_secs: u64,
    /// Largest accepted HTTP request body.
    #[arg(long, env = "XFCHAT_BODY_LIMIT_BYTES", default_value_t = 64 * 1024, global = true)]
    pub body_limit_bytes: usize,
    /// Largest accepted message body, in bytes of UTF-8.
    #[arg(long, env = "XFCHAT_MESSAGE_MAX_BYTES", default_value_t = 8 * 1024, global = true)]
    pub message_max_bytes: usize,
    /// Largest attachment, in bytes; uploads are streamed into the database, never held whole.
    #[arg(
        long,
        env = "XFCHAT_ATTACHMENT_MAX_BYTES",
        default_value_t = 10 * 1024 * 1024,
        global = true
    )]
    pub attachment_max_bytes: u64,
    /// Bytes one user may upload in 24 hours; past it uploads are refused with 429.
    #[arg(
        long,
        env = "XFCHAT_ATTACHMENT_QUOTA_BYTES",
        default_value_t = 1024 * 1024 * 1024,
        global = true
    )]
    pub attachment_quota_bytes: u64,
    /// Largest WebSocket frame a client may send; larger ones close the socket with 1009.
    #[arg(long, env = "XFCHAT_WS_MAX_FRAME_BYTES", default_value_t = 64 * 1024, global = true)]
    pub ws_max_frame_bytes: usize,
    /// Chat messages queued for one socket; past it (or past the byte cap) the socket falls
    /// behind and catches up from the database once it has read its queue.
    #[arg(
        long,
        env = "XFCHAT_WS_QUEUE_FRAMES",
        default_value_t = 1024,
        global = true
    )]
    pub ws_queue_frames: usize,
    /// Bytes of chat messages queued for one socket (see XFCHAT_WS_QUEUE_FRAMES).
    #[arg(
        long,
        env = "XFCHAT_WS_QUEUE_BYTES",
        default_value_t = 1024 * 1024,
        global = true
    )]
    pub ws_queue_bytes: usize,
    /// A socket whose writes make no progress this long (its client reads nothing) is closed
    /// with 4004.
    #[arg(
        long,
        env = "XFCHAT_WS_STALL_TIMEOUT_MS",
        default_value_t = 60_000,
        global = true
    )]
    pub ws_stall_timeout_ms: u64,
    /// Sends, syncs and read markers one user may make per second over all their sockets and
    /// HTTP (burst twice this; 0: no limit).
    #[arg(long, env = "XFCHAT_USER_RATE", default_value_t = 100, global = true)]
    pub user_rate: u32,
    /// Login attempts per minute on one account from one address (0: no limit).
    #[arg(
        long,
        env = "XFCHAT_LOGIN_ACCOUNT_RATE_PER_MIN",
        default_value_t = 5,
        global = true
    )]
    pub login_account_rate_per_min: u32,
    /// Login attempts on one account one address may make at once before the rate applies.
    #[arg(
        long,
        env = "XFCHAT_LOGIN_ACCOUNT_BURST",
        default_value_t = 10,
        global = true
    )]
    pub login_account_burst: u32,
    /// Login attempts per minute on one account from all the addresses it has not logged in
    /// from lately (those it has are exempt).
    #[arg(
        long,
        env = "XFCHAT_LOGIN_ACCOUNT_TOTAL_PER_MIN",
        default_value_t = 60,
        global = true
    )]
    pub login_account_total_per_min: u32,
    /// Login attempts per minute from one client address (0: no limit).
    #[arg(
        long,
        env = "XFCHAT_LOGIN_IP_RATE_PER_MIN",
        default_value_t = 30,
        global = true
    )]
    pub login_ip_rate_per_min: u32,
    /// Signups per minute from one client address (0: no limit).
    #[arg(
        long,
        env = "XFCHAT_SIGNUP_RATE_PER_MIN",
        default_value_t = 20,
        global = true
    )]
    pub signup_rate_per_min: u32,
    /// Friend requests, group creations and membership changes per minute of one user, in
    /// one budget (0: no limit).
    #[arg(
        long,
        env = "XFCHAT_SOCIAL_RATE_PER_MIN",
        default_value_t = 30,
        global = true
    )]
    pub social_rate_per_min: u32,
    /// Proxies (addresses or CIDR ranges, comma separated) whose X-Forwarded-For names the
    /// client; from anyone else the header is ignored.
    #[arg(
        long,
        env = "XFCHAT_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<String>,
    /// Typing indicators a user may send per second over all their sockets (burst twice this).
    #[arg(
        long,
        env = "XFCHAT_WS_TYPING_RATE",
        default_value_t = 2,
        global = true
    )]
    pub ws_typing_rate: u32,
    /// How often the server pings each socket.
    #[arg(
        long,
        env = "XFCHAT_WS_PING_INTERVAL_MS",
        default_value_t = 20_000,
        global = true
    )]
    pub ws_ping_interval_ms: u64,
    /// How long a ping may go unanswered before the socket is closed.
    #[arg(
        long,
        env = "XFCHAT_WS_PONG_TIMEOUT_MS",
        default_value_t = 20_000,
        global = true
    )]
    pub ws_pong_timeout_ms: u64,
    /// Open sockets the server accepts; beyond it upgrades get 503.
    #[arg(
        long,
        env = "XFCHAT_WS_MAX_CONNECTIONS",
        default_value_t = 20_000,
        global = true
    )]
    pub ws_max_connections: usize,
    /// Open sockets one user may hold; beyond it upgrades get 429.
    #[arg(
        long,
        env = "XFCHAT_WS_MAX_PER_USER",
        default_value_t = 16,
        global = true
    )]
    pub ws_max_per_user: usize,
    /// Open sockets from one client address; beyond it upgrades get 429.
    #[arg(
        long,
        env = "XFCHAT_WS_MAX_PER_IP",
        default_value_t = 256,
        global = true
    )]
    pub ws_max_per_ip: usize,
    /// Origins (such as `https://chat.example.com`, comma separated) whose pages may open
    /// sockets besides the server's own; a browser socket from any other origin gets 403.
    #[arg(
        long,
        env = "XFCHAT_WS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub ws_allowed_origins: Vec<String>,
    /// Persist workers: commits in flight at once, each carrying the waiting sends of every chat
    /// not already in a commit.
    #[arg(
        long,
        env = "XFCHAT_PERSIST_WORKERS",
        default_value_t = 4,
        global = true
    )]
    pub persist_workers: usize,
    /// Messages one commit may carry.
    #[arg(
        long,
        env = "XFCHAT_PERSIST_BATCH",
        default_value_t = 256,
        global = true
    )]
    pub persist_batch: usize,
    /// How long a send waits for others to share its commit, in microseconds (unless a batch
    /// fills first); 0 commits each at once.
    #[arg(
        long,
        env = "XFCHAT_PERSIST_LINGER_US",
        default_value_t = 2000,
        global = true
    )]
    pub persist_linger_us: u64,
    /// Sends waiting per persist worker before new ones are answered `overloaded`.
    #[arg(
        long,
        env = "XFCHAT_PERSIST_QUEUE",
        default_value_t = 4096,
        global = true
    )]
    pub persist_queue: usize,
    /// Open HTTP connections the server holds; beyond it, it stops accepting until one ends.
    #[arg(
        long,
        env = "XFCHAT_HTTP_MAX_CONNECTIONS",
        default_value_t = 4096,
        global = true
    )]
    pub http_max_connections: usize,
    /// Open HTTP connections one client address holds; beyond it, its new connections are closed
    /// at once so that one address cannot take the others' share. Trusted proxies are exempt.
    #[arg(
        long,
        env = "XFCHAT_HTTP_MAX_PER_IP",
        default_value_t = 256,
        global = true
    )]
    pub http_max_per_ip: usize,
    /// Time an answer may wait for the client to read it before the connection is closed.
    #[arg(
        long,
        env = "XFCHAT_HTTP_WRITE_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub http_write_timeout_ms: u64,
    /// Time a client has to send a request's headers; an idle keep-alive connection is closed
    /// after it too.
    #[arg(
        long,
        env = "XFCHAT_HTTP_HEADER_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub http_header_timeout_ms: u64,
    /// Longest a request (not an upgraded socket) may take before it is answered 503 `timeout`.
    #[arg(
        long,
        env = "XFCHAT_HTTP_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub http_request_timeout_ms: u64,
    /// How long in-flight requests may run after a shutdown signal.
    #[arg(
        long,
        env = "XFCHAT_SHUTDOWN_GRACE_SECS",
        default_value_t = 10,
        global = true
    )]
    pub shutdown_grace_secs: u64,
    /// This node's name among the nodes on one database (letters, digits, `.`, `_`, `:`, `-`;
    /// at most 64). Defaults to the host name and the listening port.
    #[arg(long, env = "XFCHAT_NODE_ID", global = true)]
    pub node_id: Option<String>,
    /// How nodes on one database hear of each other: `postgres` (LISTEN/NOTIFY), a
    /// `nats://host:port` URL (core NATS subjects), or `off`.
    #[arg(long, env = "XFCHAT_BUS", default_value = "postgres", global = true)]
    pub bus: String,
    /// With a NATS bus, the subjects' prefix: the clusters sharing one NATS each need their own.
    #[arg(
        long,
        env = "XFCHAT_BUS_PREFIX",
        default_value = "xfchat",
        global = true
    )]
    pub bus_prefix: String,
    /// How long the bus waits after a payload for others to go in the same notification, in
    /// microseconds; 0 sends each at once.
    #[arg(
        long,
        env = "XFCHAT_BUS_LINGER_US",
        default_value_t = 5000,
        global = true
    )]
    pub bus_linger_us: u64,
    #[command(flatten)]
    pub integrations: IntegrationSettings,
}

/// What stands between the server and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pooler {
    /// A direct connection (or a pooler in session mode).
    None,
    /// A pooler in transaction mode, such as PgBouncer's `pool_mode = transaction`.
    Transaction,
}

/// Where the server's connections go besides DATABASE_URL, and how they are used.
#[derive(Clone)]
pub struct DatabaseRoutes {
    /// DATABASE_URL is a pooler in transaction mode.
    pub pooled: bool,
    /// Past the pooler, for LISTEN and migrations.
    pub direct: Option<PgConnectOptions>,
    /// A read replica for history and catch-up reads.
    pub replica: Option<PgConnectOptions>,
    /// Set per transaction behind a pooler, which drops the startup options that set it.
    pub statement_timeout_ms: u64,
}

impl std::fmt::Debug for DatabaseRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = |o: &Option<PgConnectOptions>| {
            o.as_ref()
                .map(|o| format!("{}:{}", o.get_host(), o.get_port()))
        };
        f.debug_struct("DatabaseRoutes")
            .field("pooled", &self.pooled)
            .field("direct", &host(&self.direct))
            .field("replica", &host(&self.replica))
            .finish()
    }
}

/// A setting that is missing or invalid; its text names the setting and what is expected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The validated configuration every part of the server reads. Its `Debug` names the database
/// by host, port and name only.
#[derive(Clone)]
pub struct Config {
    /// The first host of `DATABASE_URL`.
    pub database: PgConnectOptions,
    /// Every host of `DATABASE_URL`, for a server that follows a failover.
    pub database_targets: crate::db::target::Targets,
    pub database_routes: DatabaseRoutes,
    pub jwt_secret: Secret,
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub db_max_connections: u32,
    pub db_permits: u32,
    pub db_permit_timeout: Duration,
    pub db_connect_timeout: Duration,
    pub token_ttl: Duration,
    pub refresh_ttl: Duration,
    pub declined_cooldown: Duration,
    pub group_max_members: i64,
    pub body_limit_bytes: usize,
    pub message_max_bytes: usize,
    pub attachment_max_bytes: u64,
    pub attachment_quota_bytes: u64,
    pub shutdown_grace: Duration,
    pub node_id: Option<String>,
    pub bus: BusKind,
    pub bus_linger: Duration,
    pub http: HttpConfig,
    pub throttle: ThrottleConfig,
    pub ws: WsConfig,
    pub integrations: Integrations,
    /// Faults the test suite injects to prove that the server contains a bug; never set from
    /// the environment or the command line.
    pub faults: Faults,
}

/// Faults on demand, for tests: a send whose body equals one of these makes the connection
/// task (`connection_panic_body`) or the persist worker that takes it (`persist_panic_body`)
/// panic, or is stored but not fanned out (`lost_fanout_body`), as if the live path had
/// dropped it. Empty in every server started from the command line.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub connection_panic_body: Option<String>,
    pub persist_panic_body: Option<String>,
    pub lost_fanout_body: Option<String>,
    /// How many of the sockets' next database reads (syncs, catch-ups) fail as if the database
    /// had gone away; shared, so a test can set it while the server runs.
    pub failing_stream_reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Faults {
    pub fn panics_connection(&self, body: &str) -> bool {
        self.connection_panic_body.as_deref() == Some(body)
    }

    pub fn loses_fanout(&self, body: &str) -> bool {
        self.lost_fanout_body.as_deref() == Some(body)
    }

    /// True (once per count) while reads are set to fail.
    pub fn fails_stream_read(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.failing_stream_reads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn panics_persist(&self, batch: &[crate::db::messages::NewMessage]) -> bool {
        let body = self.persist_panic_body.as_deref();
        body.is_some() && batch.iter().any(|m| Some(m.body.as_str()) == body)
    }
}

/// Limits of HTTP connections and requests.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub write_timeout: Duration,
    /// Peers exempt from `max_per_ip`: every client behind them shares their address.
    pub trusted_proxies: Vec<IpNet>,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

/// Abuse limits; a rate of 0 turns that limit off.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    pub user_per_sec: u32,
    pub login_account_per_min: u32,
    pub login_account_burst: u32,
    pub login_account_total_per_min: u32,
    pub login_ip_per_min: u32,
    pub signup_ip_per_min: u32,
    pub social_per_min: u32,
    /// Typing indicators per second per user, over all their sockets.
    pub typing_per_sec: u32,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// Limits of the WebSocket hub.
#[derive(Debug, Clone)]
pub struct WsConfig {
    pub max_frame_bytes: usize,
    pub queue_frames: usize,
    pub queue_bytes: usize,
    pub stall_timeout: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub max_connections: usize,
    pub max_per_user: usize,
    pub max_per_ip: usize,
    /// Lower-case origins besides the server's own whose pages may open sockets.
    pub allowed_origins: Vec<String>,
    pub persist_workers: usize,
    pub persist_batch: usize,
    pub persist_linger: Duration,
    pub persist_queue: usize,
}

/// A secret whose `Debug` never prints it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl Settings {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let url = self
            .database_url
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid("DATABASE_URL is required: set it to a postgres:// URL"))?;
        // The parse error may quote the URL, password included, so it is not passed on.
        let targets = crate::db::target::Targets::parse(url).map_err(invalid)?;
        if self.db_statement_timeout_ms == 0 {
            return Err(invalid("XFCHAT_DB_STATEMENT_TIMEOUT_MS must be at least 1"));
        }
        let timeout = format!("{}ms", self.db_statement_timeout_ms);
        let with_timeout =
            |o: PgConnectOptions| o.options([("statement_timeout", timeout.as_str())]);
        let pooled = self.database_pooler == Pooler::Transaction;
        // A pooler in transaction mode does not pass startup options on; the timeout is set in
        // each transaction instead.
        // Nor does a statement prepared in one transaction outlive it: every statement is
        // prepared anew (unnamed), never cached by name.
        let targets = if pooled {
            targets.map(|host| host.statement_cache_capacity(0))
        } else {
            targets.map(with_timeout)
        };
        let database = targets.hosts[0].clone();
        let url_setting = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(|u| {
                    // The parse error may quote the URL, password included.
                    u.parse::<PgConnectOptions>()
                        .map_err(|_| invalid(format!("{name} is not a valid postgres:// URL")))
                })
                .transpose()
        };
        let direct =
            url_setting("XFCHAT_DATABASE_DIRECT_URL", &self.database_direct_url)?.map(with_timeout);
        if pooled && direct.is_none() {
            return Err(invalid(
                "XFCHAT_DATABASE_DIRECT_URL is required with XFCHAT_DATABASE_POOLER=transaction: \
                 LISTEN and migrations need a session of their own, past the pooler",
            ));
        }
        let replica = url_setting("XFCHAT_DATABASE_READ_URL", &self.database_read_url)?.map(|o| {
            if pooled {
                o.statement_cache_capacity(0)
            } else {
                with_timeout(o)
            }
        });
        let database_routes = DatabaseRoutes {
            pooled,
            direct,
            replica,
            statement_timeout_ms: self.db_statement_timeout_ms,
        };
        let jwt_secret = self.jwt_secret.as_deref().ok_or_else(|| {
            invalid("JWT_SECRET is required: set it to a random string of at least 32 bytes")
        })?;
        if jwt_secret.len() < 32 {
            return Err(invalid(format!(
                "JWT_SECRET is too short ({} bytes): it must be at least 32 bytes",
                jwt_secret.len()
            )));
        }
        let listen = self.listen.parse().map_err(|_| {
            invalid(format!(
                "XFCHAT_LISTEN (--listen) must be an address like 127.0.0.1:8080, got {:?}",
                self.listen
            ))
        })?;
        let admin_listen = self
            .admin_listen
            .as_deref()
            .map(|a| {
                a.parse().map_err(|_| {
                    invalid(format!(
                        "XFCHAT_ADMIN_LISTEN must be an address like 127.0.0.1:9090, got {a:?}"
                    ))
                })
            })
            .transpose()?;
        if self.db_max_connections < 2 {
            return Err(invalid(
                "XFCHAT_DB_MAX_CONNECTIONS must be at least 2 (one connection is kept for readiness checks)",
            ));
        }
        let db_permits = self.db_permits.unwrap_or(self.db_max_connections - 1);
        if db_permits == 0 || db_permits >= self.db_max_connections {
            return Err(invalid(format!(
                "XFCHAT_DB_PERMITS must be between 1 and XFCHAT_DB_MAX_CONNECTIONS - 1 ({}), got {db_permits}",
                self.db_max_connections - 1
            )));
        }
        if self.db_connect_timeout_secs == 0 {
            return Err(invalid("XFCHAT_DB_CONNECT_TIMEOUT_SECS must be at least 1"));
        }
        if self.token_ttl_secs == 0 {
            return Err(invalid("XFCHAT_TOKEN_TTL_SECS must be at least 1"));
        }
        if self.refresh_ttl_secs < self.token_ttl_secs {
            return Err(invalid(
                "XFCHAT_REFRESH_TTL_SECS must be at least XFCHAT_TOKEN_TTL_SECS",
            ));
        }
        if self.message_max_bytes == 0 || self.message_max_bytes > self.body_limit_bytes {
            return Err(invalid(
                "XFCHAT_MESSAGE_MAX_BYTES must be between 1 and XFCHAT_BODY_LIMIT_BYTES",
            ));
        }
        if self.attachment_max_bytes == 0 {
            return Err(invalid("XFCHAT_ATTACHMENT_MAX_BYTES must be at least 1"));
        }
        let positive = [
            ("XFCHAT_WS_MAX_FRAME_BYTES", self.ws_max_frame_bytes),
            ("XFCHAT_WS_QUEUE_FRAMES", self.ws_queue_frames),
            ("XFCHAT_WS_QUEUE_BYTES", self.ws_queue_bytes),
            (
                "XFCHAT_WS_STALL_TIMEOUT_MS",
                self.ws_stall_timeout_ms as usize,
            ),
            ("XFCHAT_WS_TYPING_RATE", self.ws_typing_rate as usize),
            (
                "XFCHAT_WS_PING_INTERVAL_MS",
                self.ws_ping_interval_ms as usize,
            ),
            (
                "XFCHAT_WS_PONG_TIMEOUT_MS",
                self.ws_pong_timeout_ms as usize,
            ),
            ("XFCHAT_WS_MAX_CONNECTIONS", self.ws_max_connections),
            ("XFCHAT_WS_MAX_PER_USER", self.ws_max_per_user),
            ("XFCHAT_WS_MAX_PER_IP", self.ws_max_per_ip),
            ("XFCHAT_PERSIST_WORKERS", self.persist_workers),
            ("XFCHAT_PERSIST_BATCH", self.persist_batch),
            ("XFCHAT_PERSIST_QUEUE", self.persist_queue),
            ("XFCHAT_HTTP_MAX_CONNECTIONS", self.http_max_connections),
            ("XFCHAT_HTTP_MAX_PER_IP", self.http_max_per_ip),
            ("XFCHAT_GROUP_MAX_MEMBERS", self.group_max_members),
            (
                "XFCHAT_HTTP_WRITE_TIMEOUT_MS",
                self.http_write_timeout_ms as usize,
            ),
            (
                "XFCHAT_HTTP_HEADER_TIMEOUT_MS",
                self.http_header_timeout_ms as usize,
            ),
            (
                "XFCHAT_HTTP_REQUEST_TIMEOUT_MS",
                self.http_request_timeout_ms as usize,
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(format!("{name} must be at least 1")));
        }
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid(format!(
                            "XFCHAT_TRUSTED_PROXIES: {p:?} is not an address or CIDR range"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let node_id = self.node_id.clone().filter(|n| !n.is_empty());
        if let Some(n) = &node_id {
            let allowed = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
            if n.len() > 64 || !n.chars().all(allowed) {
                return Err(invalid(format!(
                    "XFCHAT_NODE_ID must be at most 64 letters, digits, '.', '_', ':' or '-', got {n:?}"
                )));
            }
        }
        Ok(Config {
            database,
            database_targets: targets,
            database_routes,
            jwt_secret: Secret(jwt_secret.to_owned()),
            listen,
            admin_listen,
            log_format: self.log_format,
            db_max_connections: self.db_max_connections,
            db_permits,
            db_permit_timeout: Duration::from_millis(self.db_permit_timeout_ms),
            db_connect_timeout: Duration::from_secs(self.db_connect_timeout_secs),
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            refresh_ttl: Duration::from_secs(self.refresh_ttl_secs),
            declined_cooldown: Duration::from_secs(self.declined_cooldown_secs),
            group_max_members: self.group_max_members as i64,
            body_limit_bytes: self.body_limit_bytes,
            message_max_bytes: self.message_max_bytes,
            attachment_max_bytes: self.attachment_max_bytes,
            attachment_quota_bytes: self.attachment_quota_bytes,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            node_id,
            bus: BusKind::parse(&self.bus, &self.bus_prefix)?,
            bus_linger: Duration::from_micros(self.bus_linger_us),
            http: HttpConfig {
                max_connections: self.http_max_connections,
                max_per_ip: self.http_max_per_ip,
                write_timeout: Duration::from_millis(self.http_write_timeout_ms),
                trusted_proxies: trusted_proxies.clone(),
                header_timeout: Duration::from_millis(self.http_header_timeout_ms),
                request_timeout: Duration::from_millis(self.http_request_timeout_ms),
            },
            throttle: ThrottleConfig {
                user_per_sec: self.user_rate,
                login_account_per_min: self.login_account_rate_per_min,
                login_account_burst: self.login_account_burst,
                login_account_total_per_min: self.login_account_total_per_min,
                login_ip_per_min: self.login_ip_rate_per_min,
                signup_ip_per_min: self.signup_rate_per_min,
                social_per_min: self.social_rate_per_min,
                typing_per_sec: self.ws_typing_rate,
                trusted_proxies,
            },
            ws: WsConfig {
                max_frame_bytes: self.ws_max_frame_bytes,
                queue_frames: self.ws_queue_frames,
                queue_bytes: self.ws_queue_bytes,
                stall_timeout: Duration::from_millis(self.ws_stall_timeout_ms),
                ping_interval: Duration::from_millis(self.ws_ping_interval_ms),
                pong_timeout: Duration::from_millis(self.ws_pong_timeout_ms),
                max_connections: self.ws_max_connections,
                max_per_user: self.ws_max_per_user,
                max_per_ip: self.ws_max_per_ip,
                allowed_origins: self
                    .ws_allowed_origins
                    .iter()
                    .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                    .filter(|o| !o.is_empty())
                    .collect(),
                persist_workers: self.persist_workers,
                persist_batch: self.persist_batch,
                persist_linger: Duration::from_micros(self.persist_linger_us),
                persist_queue: self.persist_queue,
            },
            integrations: self.integrations.validate()?,
            faults: Faults::default(),
        })
    }
}

impl Config {
    /// Where the database is, for logs and errors: host, port and name, never credentials.
    pub fn database_display(&self) -> String {
        format!(
            "{}:{}/{}",
            self.database.get_host(),
            self.database.get_port(),
            self.database.get_database().unwrap_or("(default)")
        )
    }
}

/// `database_url` with its password replaced, for `Debug`.
fn redacted_url(url: &Option<String>) -> Option<String> {
    url.as_deref().map(|u| match url::Url::parse(u) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(unparsable, hidden)".to_owned(),
    })
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Everything but the two secrets, which only say whether they are set.
        let Settings {
            database_url,
            database_read_url,
            database_direct_url,
            jwt_secret,
            listen,
            admin_listen,
            ..
        } = self;
        f.debug_struct("Settings")
            .field("database_url", &redacted_url(database_url))
            .field("database_read_url", &redacted_url(database_read_url))
            .field("database_direct_url", &redacted_url(database_direct_url))
            .field("jwt_secret", &jwt_secret.as_ref().map(|_| "REDACTED"))
            .field("listen", listen)
            .field("admin_listen", admin_listen)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database", &self.database_display())
            .field("database_routes", &self.database_routes)
            .field("jwt_secret", &self.jwt_secret)
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("log_format", &self.log_format)
            .field("db_max_connections", &self.db_max_connections)
            .field("db_permits", &self.db_permits)
            .field("db_permit_timeout", &self.db_permit_timeout)
            .field("db_connect_timeout", &self.db_connect_timeout)
            .field("token_ttl", &self.token_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("declined_cooldown", &self.declined_cooldown)
            .field("group_max_members", &self.group_max_members)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("message_max_bytes", &self.message_max_bytes)
            .field("attachment_max_bytes", &self.attachment_max_bytes)
            .field("attachment_quota_bytes", &self.attachment_quota_bytes)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("node_id", &self.node_id)
            .field("bus", &self.bus)
            .field("http", &self.http)
            .field("throttle", &self.throttle)
            .field("ws", &self.ws)
            .field("integrations", &self.integrations)
            .field("faults", &self.faults)
            .finish()
    }
}

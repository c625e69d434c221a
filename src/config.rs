//! One typed configuration, read from the environment with command-line flags overriding it,
//! validated once at startup. A bad setting stops the process with one line that names it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sqlx::postgres::PgConnectOptions;

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
    Migrate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Raw settings as given; [`Settings::validate`] turns them into a [`Config`].
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL URL (required).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Secret that signs access tokens, at least 32 bytes (required).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
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
    /// How long startup keeps trying to reach the database.
    #[arg(
        long,
        env = "XFCHAT_DB_CONNECT_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub db_connect_timeout_secs: u64,
    /// Lifetime of an access token.
    #[arg(
        long,
        env = "XFCHAT_TOKEN_TTL_SECS",
        default_value_t = 86_400,
        global = true
    )]
    pub token_ttl_secs: u64,
    /// Largest accepted HTTP request body.
    #[arg(long, env = "XFCHAT_BODY_LIMIT_BYTES", default_value_t = 64 * 1024, global = true)]
    pub body_limit_bytes: usize,
    /// Largest accepted message body, in bytes of UTF-8.
    #[arg(long, env = "XFCHAT_MESSAGE_MAX_BYTES", default_value_t = 8 * 1024, global = true)]
    pub message_max_bytes: usize,
    /// How long in-flight requests may run after a shutdown signal.
    #[arg(
        long,
        env = "XFCHAT_SHUTDOWN_GRACE_SECS",
        default_value_t = 10,
        global = true
    )]
    pub shutdown_grace_secs: u64,
}

/// A setting that is missing or invalid; its text names the setting and what is expected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The validated configuration every part of the server reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: PgConnectOptions,
    pub jwt_secret: Secret,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub db_max_connections: u32,
    pub db_permits: u32,
    pub db_permit_timeout: Duration,
    pub db_connect_timeout: Duration,
    pub token_ttl: Duration,
    pub body_limit_bytes: usize,
    pub message_max_bytes: usize,
    pub shutdown_grace: Duration,
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
        let database: PgConnectOptions = url.parse().map_err(|_| {
            invalid("DATABASE_URL is not a valid postgres:// URL (postgres://user:password@host:port/database)")
        })?;
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
        if self.message_max_bytes == 0 || self.message_max_bytes > self.body_limit_bytes {
            return Err(invalid(
                "XFCHAT_MESSAGE_MAX_BYTES must be between 1 and XFCHAT_BODY_LIMIT_BYTES",
            ));
        }
        Ok(Config {
            database,
            jwt_secret: Secret(jwt_secret.to_owned()),
            listen,
            log_format: self.log_format,
            db_max_connections: self.db_max_connections,
            db_permits,
            db_permit_timeout: Duration::from_millis(self.db_permit_timeout_ms),
            db_connect_timeout: Duration::from_secs(self.db_connect_timeout_secs),
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            body_limit_bytes: self.body_limit_bytes,
            message_max_bytes: self.message_max_bytes,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
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

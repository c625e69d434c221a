//! The harness's command line. Every option has a default that runs against `scripts/run`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Many small group chats (members-per-chat each): the everyday mix.
    Chat,
    /// One large group of every connection: fan-out heavy.
    Room,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecArg {
    Json,
    Msgpack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced sends.
    Fixed,
    /// Exponentially distributed gaps (a Poisson process).
    Poisson,
}

#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(
    name = "xfchat-load",
    about = "Open-loop load against XFChat, with exact delivery verification"
)]
pub struct Args {
    /// The server's HTTP base URL (the WebSocket URL is derived from it).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// WebSocket connections, one per user.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Chats in the `chat` scenario.
    #[arg(long, default_value_t = 50)]
    pub chats: usize,
    /// Members of each chat in the `chat` scenario.
    #[arg(long, default_value_t = 3)]
    pub members_per_chat: usize,
    /// Total messages per second over all connections.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How the sends are spaced.
    #[arg(long, value_enum, default_value = "fixed")]
    pub arrival: Arrival,
    /// Measured load time, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Load before measuring starts, in seconds (verified, not measured).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// How long to wait for outstanding acks and deliveries after the load stops, in seconds.
    #[arg(long, default_value_t = 15.0)]
    pub drain: f64,
    #[arg(long, value_enum, default_value = "json")]
    pub codec: CodecArg,
    /// Size of each message body.
    #[arg(long, default_value_t = 100)]
    pub body_bytes: usize,
    #[arg(long, value_enum, default_value = "chat")]
    pub scenario: Scenario,
    /// Names this run's accounts; a random one by default.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Extra members of the first chat that connect and never read: the server must cut them
    /// off as slow consumers without hurting anyone else. Not part of the exactness check.
    #[arg(long, default_value_t = 0)]
    pub slow_consumers: usize,
    /// Set-up requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub setup_parallelism: usize,
    /// Compare acked messages with the `messages` table directly (otherwise: the history API).
    #[arg(long, env = "XFCHAT_LOAD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar (for logs and CI).
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    pub fn total(&self) -> Duration {
        Duration::from_secs_f64(self.warmup + self.duration)
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.url.replacen("http", "ws", 1))
    }
}

//! The harness's command line. Every option has a default that runs against `scripts/run`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Many small group chats (members-per-chat each): the everyday mix.
    Chat,
    /// One large group of every connection: fan-out heavy.
    Room,
    /// Connections that only answer heartbeats: the server's memory per connection.
    Idle,
    /// The chat mix at rising rates until p99 ack latency passes the bound or errors appear.
    Burst,
    /// The chat mix while clients drop their sockets, reconnect, resend and sync.
    Reconnect,
    /// The chat mix where a fraction of the readers read in bursts with long pauses: they fall
    /// behind their queues and must be caught up, exactly, without being cut off.
    Slow,
    /// Every connection reconnects at once, `--storm-behind` messages behind in each chat,
    /// while `--rate` sends a second keep coming over HTTP.
    Storm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecArg {
    Json,
    Msgpack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced sends.
    Fixed,
    /// Exponentially distributed gaps (a Poisson process).
    Poisson,
}

#[derive(Debug, Parser)]
#[command(
    name = "xfchat-load",
    about = "Open-loop load against XFChat, with exact delivery verification"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: Args,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Combine the JSON reports of harness processes that shared one run (histograms are merged,
    /// not percentiles averaged).
    Merge {
        /// The reports to combine.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Write the combined report here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, clap::Args, serde::Serialize, serde::Deserialize)]
pub struct Args {
    /// The server's HTTP base URL (the WebSocket URL is derived from it).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Nodes to spread the sockets over (HTTP base URLs, comma-separated): socket `i` goes to
    /// the `i`-th modulo their number, and a reconnecting client moves on to the next. Setup and
    /// verification use `--url`. Without it, every socket goes to `--url`.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
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
    /// Names this run's accounts; a random one by default. Processes sharing a run use one
    /// run id and different `--shard`s, then `merge` their reports.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Log in to accounts an earlier run with the same `--run-id` created, instead of failing.
    #[arg(long)]
    pub reuse: bool,
    /// This process's part of a shared run.
    #[arg(long, default_value_t = 0)]
    pub shard: usize,
    /// Sockets per account (the `idle` scenario; the server caps sockets per user).
    #[arg(long, default_value_t = 1)]
    pub connections_per_account: usize,
    /// `burst`: the p99 send->ack bound, in milliseconds, past which a step fails.
    #[arg(long, default_value_t = 50.0)]
    pub p99_bound_ms: f64,
    /// `burst`: each step's rate is the last one's times this.
    #[arg(long, default_value_t = 1.5)]
    pub burst_step: f64,
    /// `storm`: messages each chat receives while its members are away, before they all
    /// reconnect at once.
    #[arg(long, default_value_t = 500)]
    pub storm_behind: usize,
    /// `slow`: the fraction of connections that read slowly.
    #[arg(long, default_value_t = 0.2)]
    pub slow_fraction: f64,
    /// `slow`: a slow reader reads for a second, then reads nothing for this many seconds.
    #[arg(long, default_value_t = 2.0)]
    pub slow_pause: f64,
    /// `reconnect`: seconds between a client's reconnects (randomised ±50%).
    #[arg(long, default_value_t = 2.0)]
    pub reconnect_every: f64,
    /// `burst`: the chats to load, as in the `chat` or the `room` scenario.
    #[arg(long, value_enum, default_value = "chat")]
    pub burst_layout: Scenario,
    /// `burst`: the most steps to run.
    #[arg(long, default_value_t = 8)]
    pub max_steps: usize,
    /// `burst`: after the first rate that failed, this many more steps halve the gap between
    /// the last rate that passed and the lowest that failed (a step passing raises the one,
    /// failing lowers the other); the knee is the fastest that passed. Stops early once the
    /// gap is under 5%.
    #[arg(long, default_value_t = 0)]
    pub bisect: usize,
    /// Measured stretches per step (`burst`) or per rate. A `burst` step passes when its median stretch (by p99
    /// ack) is within the bound without errors, and every stretch was exact; a failing step
    /// runs once more at the same rate and the search ends when it fails again, so one spike
    /// cannot end it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub trials: u32,
    /// Extra members of the first chat that connect and never read: the server must close
    /// them as stalled (after XFCHAT_WS_STALL_TIMEOUT_MS) without hurting anyone else. Not part
    /// of the exactness check.
    #[arg(long, default_value_t = 0)]
    pub slow_consumers: usize,
    /// Set-up requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub setup_parallelism: usize,
    /// The server's process id, to read its CPU time and memory from `/proc` (the harness
    /// runs on the same machine); without it they come from the server's `/metrics`. Several
    /// (comma-separated, one per node) are added up.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// `chat`, `room`, `slow`: run at each of these rates in turn (`--trials` stretches each)
    /// instead of at `--rate` alone.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
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

    /// Accounts the set-up creates.
    pub fn accounts(&self) -> usize {
        match self.scenario {
            Scenario::Idle => self
                .connections
                .div_ceil(self.connections_per_account.max(1)),
            _ => self.connections,
        }
    }

    /// The WebSocket URL for socket `slot`: among `--targets` in turn, or `--url`.
    pub fn ws_url(&self, slot: usize) -> String {
        let base = match self.targets.len() {
            0 => &self.url,
            n => &self.targets[slot % n],
        };
        format!("{}/ws", base.replacen("http", "ws", 1))
    }
}

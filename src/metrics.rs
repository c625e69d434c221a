//! Every metric the server exports: names, help, labels and histogram buckets in one place.
//! Names follow Prometheus conventions: `xfchat_` prefix, base units, `_total` for counters, and
//! only low-cardinality labels (never a user, chat or message id).

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// Database pool and guard.
pub const DB_UP: &str = "xfchat_db_up";
pub const DB_POOL_CONNECTIONS: &str = "xfchat_db_pool_connections";
pub const DB_POOL_MAX: &str = "xfchat_db_pool_max_connections";
pub const DB_POOL_ACQUIRE: &str = "xfchat_db_pool_acquire_seconds";
pub const DB_PERMITS: &str = "xfchat_db_permits";
pub const DB_PERMITS_MAX: &str = "xfchat_db_permits_max";
pub const DB_PERMIT_WAIT: &str = "xfchat_db_permit_wait_seconds";
pub const DB_PERMIT_TIMEOUTS: &str = "xfchat_db_permit_timeouts_total";
pub const DB_OPERATION: &str = "xfchat_db_operation_seconds";
pub const DB_ERRORS: &str = "xfchat_db_errors_total";
// Messages.
pub const PERSISTED: &str = "xfchat_messages_persisted_total";
pub const COMMIT: &str = "xfchat_persist_commit_seconds";
pub const BATCH_SIZE: &str = "xfchat_persist_batch_size";
pub const PERSIST_FAILURES: &str = "xfchat_persist_failures_total";
pub const ACK_LATENCY: &str = "xfchat_ack_latency_seconds";
pub const FANOUT: &str = "xfchat_fanout_seconds";
pub const DELIVERIES: &str = "xfchat_deliveries_total";
pub const REPLAYS: &str = "xfchat_idempotent_replays_total";
pub const PERSIST_RESTARTS: &str = "xfchat_persist_worker_restarts_total";
pub const PERSIST_SLOTS: &str = "xfchat_persist_commit_slots";
// WebSocket.
pub const WS_CONNECTIONS: &str = "xfchat_ws_connections";
pub const WS_CONNECTS: &str = "xfchat_ws_connects_total";
pub const WS_DISCONNECTS: &str = "xfchat_ws_disconnects_total";
pub const WS_REFUSED: &str = "xfchat_ws_upgrades_refused_total";
pub const WS_FRAMES_IN: &str = "xfchat_ws_frames_received_total";
pub const WS_FRAMES_OUT: &str = "xfchat_ws_frames_sent_total";
pub const WS_QUEUE: &str = "xfchat_ws_outbound_queue_frames";
pub const WS_QUEUE_BYTES: &str = "xfchat_ws_outbound_queue_bytes";
pub const WS_CATCHUPS: &str = "xfchat_ws_catchup_messages_total";
pub const WS_READ_RETRIES: &str = "xfchat_ws_read_retries_total";
pub const WS_ERROR_FRAMES: &str = "xfchat_ws_error_frames_total";
pub const WS_SENDS_REFUSED: &str = "xfchat_ws_sends_refused_total";
pub const WS_RATE_LIMITED: &str = "xfchat_ws_rate_limited_total";
pub const WS_PANICS: &str = "xfchat_ws_connection_panics_total";
// Abuse limits.
pub const RATE_LIMITED: &str = "xfchat_rate_limited_total";
// HTTP and process.
pub const HTTP_REQUESTS: &str = "xfchat_http_requests_total";
pub const HTTP_DURATION: &str = "xfchat_http_request_duration_seconds";
pub const HTTP_CONNECTIONS: &str = "xfchat_http_connections";
pub const HTTP_CLOSED: &str = "xfchat_http_connections_closed_total";
pub const BUILD_INFO: &str = "xfchat_build_info";
pub const LOG_LINES_DROPPED: &str = "xfchat_log_lines_dropped_total";
pub const DB_FAILOVERS: &str = "xfchat_db_failovers_total";
pub const DB_REPLICA_READS: &str = "xfchat_db_replica_reads_total";
pub const BUS_DROPPED: &str = "xfchat_bus_events_dropped_total";
pub const BUS_TOO_LARGE: &str = "xfchat_bus_events_too_large_total";
pub const BUS_REFUSED: &str = "xfchat_bus_events_refused_total";
pub const BUS_BATCH: &str = "xfchat_bus_send_payloads";
pub const BUS_RECEIVED: &str = "xfchat_bus_notifications_received_total";
pub const BUS_ANNOUNCED: &str = "xfchat_bus_messages_announced_total";
pub const BUS_RECONNECTS: &str = "xfchat_bus_reconnects_total";
pub const BUS_REPAIRED: &str = "xfchat_bus_repaired_messages_total";
pub const BUS_UP: &str = "xfchat_bus_up";
pub const WEBHOOK_BACKLOG: &str = "xfchat_webhook_backlog_events";
pub const WEBHOOK_OLDEST: &str = "xfchat_webhook_oldest_event_age_seconds";
pub const WEBHOOK_REQUESTS: &str = "xfchat_webhook_requests_total";
pub const WEBHOOK_DELIVERED: &str = "xfchat_webhook_events_delivered_total";

/// Latency buckets for everything measured in seconds: 100 µs to 10 s, about three per decade.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Messages per group commit: 1 to the largest batch.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Bytes waiting in a socket's queue when one is written: 1 KiB to 16 MiB.
pub const QUEUE_BYTES_BUCKETS: &[f64] = &[
    1024.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];
/// Frames waiting in a socket's queue when one is written.
pub const QUEUE_BUCKETS: &[f64] = &[0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0];

/// Why a socket ended; the `reason` label of [`WS_DISCONNECTS`].
pub mod reason {
    pub const NORMAL: &str = "normal";
    pub const STALLED: &str = "stalled";
    pub const HEARTBEAT: &str = "heartbeat";
    pub const SHUTDOWN: &str = "shutdown";
    pub const TOKEN_EXPIRED: &str = "token_expired";
    pub const REVOKED: &str = "token_revoked";
    pub const REWOUND: &str = "history_rewound";
    pub const ERROR: &str = "error";
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns the handle `/metrics` renders.
/// The node id is a label of `xfchat_build_info` only: Prometheus's `instance` label already
/// tells nodes apart on every series, and joins with this one name them.
pub fn install(node: &str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BUS_BATCH.into()), BATCH_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(WS_QUEUE.into()), QUEUE_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(WS_QUEUE_BYTES.into()), QUEUE_BYTES_BUCKETS))
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("the only metrics recorder in this process");
            describe();
            register_at_zero();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "git_sha" => env!("XFCHAT_GIT_SHA"), "node" => node.to_owned())
                .set(1.0);
            handle
        })
        .clone()
}

/// Folds the histograms' recorded samples into their buckets every few seconds. The exporter
/// keeps every sample until then: without it, a server nobody scrapes (or scrapes rarely)
/// would grow by eight bytes per sample, several samples per message.
pub async fn upkeep(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// Registers the counters that alerts and panels read, so a healthy server shows 0 rather than
/// "No data" before the first failure.
fn register_at_zero() {
    metrics::counter!(DB_PERMIT_TIMEOUTS).increment(0);
    metrics::counter!(PERSIST_RESTARTS).increment(0);
    metrics::counter!(WS_PANICS).increment(0);
    metrics::counter!(LOG_LINES_DROPPED).increment(0);
    metrics::counter!(BUS_DROPPED).increment(0);
    metrics::counter!(DB_FAILOVERS).increment(0);
    metrics::counter!(BUS_TOO_LARGE).increment(0);
    for how in ["carried", "named"] {
        metrics::counter!(BUS_ANNOUNCED, "how" => how).increment(0);
    }
    for reason in ["seal", "unreadable", "stale", "kind"] {
        metrics::counter!(BUS_REFUSED, "reason" => reason).increment(0);
    }
    metrics::counter!(BUS_RECONNECTS).increment(0);
    metrics::counter!(BUS_REPAIRED).increment(0);
    for channel in ["messages", "events"] {
        metrics::counter!(BUS_RECEIVED, "channel" => channel).increment(0);
    }
    for kind in ["timeout", "connection", "query", "data"] {
        metrics::counter!(DB_ERRORS, "kind" => kind).increment(0);
    }
    for code in ["overloaded", "persist_failed"] {
        metrics::counter!(PERSIST_FAILURES, "code" => code).increment(0);
    }
    for code in crate::protocol::ErrorCode::ALL {
        metrics::counter!(WS_ERROR_FRAMES, "code" => code.as_str()).increment(0);
        metrics::counter!(WS_SENDS_REFUSED, "code" => code.as_str(), "cause" => code.fault())
            .increment(0);
    }
    for kind in [
        "send",
        "sync",
        "resume",
        "read",
        "typing",
        "ping",
        "edit",
        "delete",
        "react",
        "unreact",
        "bad_frame",
    ] {
        metrics::counter!(WS_FRAMES_IN, "type" => kind).increment(0);
    }
    for kind in ["send", "sync", "read", "typing", "amend"] {
        metrics::counter!(WS_RATE_LIMITED, "kind" => kind).increment(0);
    }
    for reason in [
        "unauthorized",
        "origin",
        "server_full",
        "user_full",
        "address_full",
    ] {
        metrics::counter!(WS_REFUSED, "reason" => reason).increment(0);
    }
    for outcome in ["ok", "failed"] {
        metrics::counter!(WEBHOOK_REQUESTS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(WEBHOOK_DELIVERED).increment(0);
    for reason in ["write_timeout", "address_cap"] {
        metrics::counter!(HTTP_CLOSED, "reason" => reason).increment(0);
    }
}

fn describe() {
    describe_gauge!(
        DB_UP,
        "1 when the background probe's SELECT 1 answered within a second, else 0"
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Pool connections by state (idle, in_use)"
    );
    describe_gauge!(DB_POOL_MAX, "Most connections the pool opens");
    describe_histogram!(
        DB_POOL_ACQUIRE,
        Unit::Seconds,
        "Wait for a pool connection after taking a permit"
    );
    describe_gauge!(
        DB_PERMITS,
        "Pool guard permits by state (available, in_use)"
    );
    describe_gauge!(DB_PERMITS_MAX, "Pool guard permits in all");
    describe_histogram!(
        DB_PERMIT_WAIT,
        Unit::Seconds,
        "Wait for a pool guard permit"
    );
    describe_counter!(
        DB_PERMIT_TIMEOUTS,
        "Requests answered overloaded because no permit came in time"
    );
    describe_histogram!(
        DB_OPERATION,
        Unit::Seconds,
        "Time a guarded connection was held, by operation"
    );
    describe_counter!(
        DB_ERRORS,
        "Database errors by kind (connection, timeout, query)"
    );
    describe_counter!(
        LOG_LINES_DROPPED,
        "Log lines dropped because stderr was not read fast enough"
    );
    describe_counter!(
        BUS_DROPPED,
        "Payloads for other nodes dropped (queue full, or the bus unreachable): events, and with NATS also announcements of commits"
    );
    describe_counter!(
        DB_FAILOVERS,
        "Times the pool was pointed at another host of DATABASE_URL because its host no longer answered or took writes"
    );
    describe_counter!(
        BUS_ANNOUNCED,
        "Committed messages announced to other nodes: how=carried (whole and sealed, delivered there without a read) or named (by seq, read back there)"
    );
    describe_counter!(
        DB_REPLICA_READS,
        "History and catch-up reads by where their messages came from: result=replica (all of them), behind (the replica lacked the tail, read from the primary), failed (the replica did not answer; all from the primary)"
    );
    describe_counter!(
        BUS_TOO_LARGE,
        "Events too large for one bus payload that could not go as a reference either, dropped (chat and members events go as a reference to their chat)"
    );
    describe_counter!(
        BUS_REFUSED,
        "Events from the bus refused, by reason: seal (not sealed with the cluster's secret, or changed), unreadable, stale (over a minute old: a replay), kind (a frame that never travels as an event)"
    );
    describe_counter!(
        BUS_RECEIVED,
        "Notifications from other nodes, by channel (messages, events)"
    );
    describe_counter!(BUS_RECONNECTS, "Times the bus listener reconnected");
    describe_histogram!(
        BUS_BATCH,
        "Payloads (announcements, events, heartbeats) gathered into one send to the other nodes"
    );
    describe_counter!(
        BUS_REPAIRED,
        "Messages found by a position check that no notification announced"
    );
    describe_gauge!(
        BUS_UP,
        "1 while the bus listener hears its own heartbeats, else 0"
    );
    describe_gauge!(
        WEBHOOK_BACKLOG,
        "Webhook events in the outbox, not yet taken by the receiver (all nodes)"
    );
    describe_gauge!(
        WEBHOOK_OLDEST,
        "Age of the oldest webhook event in the outbox, 0 when it is empty"
    );
    describe_counter!(
        WEBHOOK_REQUESTS,
        "Webhook requests by outcome (ok, failed: an error answer, a timeout, no connection)"
    );
    describe_counter!(WEBHOOK_DELIVERED, "Webhook events the receiver took");
    describe_counter!(PERSISTED, "Messages committed");
    describe_histogram!(COMMIT, Unit::Seconds, "Duration of one group commit");
    describe_histogram!(BATCH_SIZE, "Sends in one group commit");
    describe_gauge!(
        PERSIST_SLOTS,
        "Group commits this node may have in flight at once: the persist workers' share when other nodes are heard"
    );
    describe_counter!(
        PERSIST_FAILURES,
        "Sends answered with an error because their commit failed, by code"
    );
    describe_histogram!(
        ACK_LATENCY,
        Unit::Seconds,
        "Send frame received to ack written"
    );
    describe_histogram!(
        FANOUT,
        Unit::Seconds,
        "Queueing one committed message for every member's sockets"
    );
    describe_counter!(DELIVERIES, "Message frames queued for recipients' sockets");
    describe_counter!(
        REPLAYS,
        "Resends recognised and answered with the stored message"
    );
    describe_gauge!(WS_CONNECTIONS, "Open WebSocket connections");
    describe_counter!(WS_CONNECTS, "WebSocket connections opened");
    describe_counter!(WS_DISCONNECTS, "WebSocket connections closed, by reason");
    describe_counter!(
        WS_REFUSED,
        "Upgrades refused before the handshake, by reason"
    );
    describe_counter!(WS_FRAMES_IN, "Client frames received, by type");
    describe_counter!(WS_FRAMES_OUT, "Server frames written, by type");
    describe_histogram!(
        WS_QUEUE,
        "Frames waiting in a socket's queue when one is written"
    );
    describe_counter!(WS_ERROR_FRAMES, "Error frames sent, by code");
    describe_counter!(
        WS_SENDS_REFUSED,
        "Sends answered with an error frame, by code and cause: server (the send objective counts it) or client"
    );
    describe_histogram!(
        WS_QUEUE_BYTES,
        "Bytes of chat messages waiting in a socket's queue when one is written"
    );
    describe_counter!(
        WS_CATCHUPS,
        "Messages sockets read from the database rather than the live fan-out (sync, resume, gap repair, catch-up)"
    );
    describe_counter!(
        WS_READ_RETRIES,
        "Sockets' database reads (sync, resume, gap repair, catch-up) that failed and were tried again by the socket after a backoff"
    );
    describe_counter!(
        WS_RATE_LIMITED,
        "Socket frames refused by a rate limit, by kind (send, sync, read, typing)"
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests and frames refused by an abuse limit, by limit (login_account, login_ip, signup_ip, user)"
    );
    describe_counter!(
        WS_PANICS,
        "Connection tasks that panicked (a bug); each socket was closed with 1011"
    );
    describe_counter!(
        PERSIST_RESTARTS,
        "Persist workers restarted after a panic (a bug); their unanswered sends got persist_failed"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by route template and status class"
    );
    describe_gauge!(
        HTTP_CONNECTIONS,
        "Open HTTP connections (upgraded sockets leave this count at the upgrade)"
    );
    describe_counter!(
        HTTP_CLOSED,
        "HTTP connections the server closed to protect others, by reason (write_timeout: the client did not read an answer in time; address_cap: its address held XFCHAT_HTTP_MAX_PER_IP)"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request duration by route template"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels name the version and git commit"
    );
}

/// Handles for the per-message path, registered once so that recording is a few atomics.
#[derive(Clone)]
pub struct HubMetrics {
    pub persisted: Counter,
    pub commit: Histogram,
    pub batch_size: Histogram,
    pub ack_latency: Histogram,
    pub fanout: Histogram,
    pub deliveries: Counter,
    pub replays: Counter,
    pub queue_depth: Histogram,
    pub queue_bytes: Histogram,
    pub from_database: Counter,
    /// Socket reads that failed and will be tried again.
    pub read_retries: Counter,
    frames_out: [Counter; FRAME_KINDS.len()],
}

/// Every server frame `type`, so their counters can be registered up front.
const FRAME_KINDS: [&str; 14] = [
    "hello",
    "rewound",
    "ack",
    "message",
    "synced",
    "read",
    "typing",
    "friend_request",
    "chat",
    "members",
    "chat_removed",
    "presence",
    "pong",
    "error",
];

impl HubMetrics {
    pub fn new() -> Self {
        Self {
            persisted: metrics::counter!(PERSISTED),
            commit: metrics::histogram!(COMMIT),
            batch_size: metrics::histogram!(BATCH_SIZE),
            ack_latency: metrics::histogram!(ACK_LATENCY),
            fanout: metrics::histogram!(FANOUT),
            deliveries: metrics::counter!(DELIVERIES),
            replays: metrics::counter!(REPLAYS),
            queue_depth: metrics::histogram!(WS_QUEUE),
            queue_bytes: metrics::histogram!(WS_QUEUE_BYTES),
            from_database: metrics::counter!(WS_CATCHUPS),
            read_retries: metrics::counter!(WS_READ_RETRIES),
            frames_out: FRAME_KINDS.map(|kind| metrics::counter!(WS_FRAMES_OUT, "type" => kind)),
        }
    }

    /// Counts a frame written to a socket.
    pub fn frame_out(&self, kind: &str) {
        if let Some(i) = FRAME_KINDS.iter().position(|k| *k == kind) {
            self.frames_out[i].increment(1);
        }
    }
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a socket's send answered with the error `code`.
pub fn send_refused(code: crate::protocol::ErrorCode) {
    metrics::counter!(WS_SENDS_REFUSED, "code" => code.as_str(), "cause" => code.fault())
        .increment(1);
}

/// Counts a read meant for the replica by how it ended: `replica`, `behind` or `failed`.
pub fn replica_read(result: &'static str) {
    metrics::counter!(DB_REPLICA_READS, "result" => result).increment(1);
}

/// Counts the pool following a failover to another host.
pub fn failover() {
    metrics::counter!(DB_FAILOVERS).increment(1);
}

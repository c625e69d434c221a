//! Logging (`RUST_LOG` filters, `XFCHAT_LOG_FORMAT=json` switches to JSON lines) and the
//! background sampling behind the database metrics.
//!
//! Log lines go to stderr through a bounded queue and a writer thread of their own, never from
//! the runtime's threads: when whatever reads stderr stops reading (a full pipe, a stuck log
//! shipper), lines beyond the queue are dropped and counted, and serving goes on. Written
//! directly, the first full pipe stopped every worker thread, and with them every socket.

use std::sync::OnceLock;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::db::Db;
use crate::metrics as m;

use crate::config::LogFormat;

/// Log lines waiting for the writer thread; more are dropped.
const LOG_QUEUE_LINES: usize = 4096;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Starts logging. Keep the guard until exit: dropping it writes out the lines still queued.
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("xfchat-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

/// Publishes how many log lines were dropped because stderr was not read fast enough.
fn sample_logs() {
    if let Some(dropped) = DROPPED.get() {
        metrics::counter!(m::LOG_LINES_DROPPED).absolute(dropped.dropped_lines() as u64);
    }
}

/// Samples the pool every second and probes the database every five, until `stop`. The probe
/// uses the raw pool, so a saturated guard does not make the database look down.
pub async fn watch_database(db: Db, permits: u32, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for n in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        db.sample(permits);
        sample_logs();
        if n % 5 == 0 {
            let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(db.pool());
            let up = matches!(
                tokio::time::timeout(Duration::from_secs(1), probe).await,
                Ok(Ok(1))
            );
            metrics::gauge!(m::DB_UP).set(if up { 1.0 } else { 0.0 });
        }
    }
}

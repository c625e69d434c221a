//! Logging (`RUST_LOG` filters, `XFCHAT_LOG_FORMAT=json` switches to JSON lines) and the
//! background sampling behind the database metrics.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::db::Db;
use crate::metrics as m;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
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

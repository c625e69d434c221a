//! The live progress bar, the closing table and the JSON report.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::Args;
use crate::run::Live;
use crate::verify::Problem;

/// Shows acked messages, the rate and the live p99 ack latency while the load runs.
pub fn progress(args: &Args, live: Arc<Live>) -> tokio::task::JoinHandle<()> {
    let total = args.total();
    tokio::spawn(async move {
        let bar = ProgressBar::new(total.as_secs());
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len}s {msg}").expect("valid template"),
        );
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let acked = live.acked.load(Ordering::Relaxed);
            let p99 = live
                .ack_us
                .lock()
                .expect("not poisoned")
                .value_at_quantile(0.99) as f64
                / 1000.0;
            bar.set_position(live.start.elapsed().as_secs().min(total.as_secs()));
            bar.set_message(format!(
                "acked {acked} ({}/s), p99 ack {p99:.1} ms",
                acked - last
            ));
            last = acked;
        }
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl From<&Histogram<u64>> for Percentiles {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub postgres_version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Exactness {
    pub ok: bool,
    pub checked_against: &'static str,
    pub messages_checked: usize,
    pub problems: usize,
    pub first_problems: Vec<Problem>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub run_id: String,
    pub config: Args,
    pub machine: Machine,
    pub setup_seconds: f64,
    pub connections: usize,
    pub connection_failures: usize,
    pub sent: u64,
    pub acked: u64,
    pub unanswered: u64,
    pub acked_per_sec: f64,
    pub deliveries_per_sec: f64,
    pub ack_latency: Percentiles,
    pub delivery_latency: Percentiles,
    pub errors: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    pub slow_consumer_closes: u64,
    pub exactness: Exactness,
}

impl Report {
    pub fn print(&self) {
        let row = |name: &str, p: &Percentiles| {
            println!(
                "{name:<18} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10}",
                p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms, p.count
            )
        };
        println!(
            "run {} ({:?}, {} connections, {:.0} msg/s offered)",
            self.run_id, self.config.scenario, self.connections, self.config.rate
        );
        println!(
            "set-up                 {:.1} s (not counted as load)",
            self.setup_seconds
        );
        println!(
            "acked                  {} of {} sent ({} unanswered)",
            self.acked, self.sent, self.unanswered
        );
        println!("acked/s (measured)     {:.0}", self.acked_per_sec);
        println!("deliveries/s           {:.0}", self.deliveries_per_sec);
        println!(
            "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "count"
        );
        row("send -> ack", &self.ack_latency);
        row("send -> delivery", &self.delivery_latency);
        println!("errors                 {:?}", self.errors);
        println!("connection failures    {}", self.connection_failures);
        println!(
            "closes                 {:?} (slow consumer: {})",
            self.closes, self.slow_consumer_closes
        );
        let e = &self.exactness;
        if e.ok {
            println!("exactness              OK: {} messages, every recipient once and in order, equal to the {}", e.messages_checked, e.checked_against);
        } else {
            println!(
                "exactness              FAILED: {} problems; first:",
                e.problems
            );
            for p in &e.first_problems {
                println!("  - {p}");
            }
        }
    }
}

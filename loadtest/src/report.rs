//! The live progress bar, the closing table and the JSON report.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::cli::Args;
use crate::client::Live;
use crate::figures::{Figures, Percentiles};
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub postgres_version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exactness {
    pub ok: bool,
    pub checked_against: String,
    pub messages_checked: usize,
    pub problems: usize,
    pub first_problems: Vec<Problem>,
}

/// One measured stretch and its verification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub figures: Figures,
    pub exactness: Exactness,
    /// CPU the server used during the stretch, from its `xfchat_process_cpu_seconds_total`.
    pub server_cpu_seconds: Option<f64>,
}

/// `idle`: the server's memory with the connections open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Idle {
    pub connections: usize,
    pub connection_failures: usize,
    pub connect_seconds: f64,
    pub server_rss_before_bytes: Option<f64>,
    pub server_rss_after_bytes: Option<f64>,
    pub bytes_per_connection: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    pub config: Args,
    pub machine: Machine,
    pub setup_seconds: f64,
    /// The headline stretch: the run itself, or for `burst` the fastest step that passed.
    pub result: Option<Step>,
    /// `burst`: every step, slowest first; the knee is the fastest that passed.
    pub steps: Vec<Step>,
    pub knee_rate: Option<f64>,
    pub idle: Option<Idle>,
    #[serde(default)]
    pub storm: Option<crate::storm::Storm>,
    pub exact: bool,
}

fn latency_row(name: &str, p: &Percentiles) {
    println!(
        "{name:<18} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10}",
        p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms, p.count
    );
}

impl Step {
    pub fn print(&self) {
        let f = &self.figures;
        println!(
            "offered                {:.0} msg/s over {} connections",
            f.rate, f.connections
        );
        println!(
            "acked                  {} of {} sent ({} unanswered)",
            f.acked, f.sent, f.unanswered
        );
        println!("acked/s (measured)     {:.0}", f.acked_per_sec);
        println!("deliveries/s           {:.0}", f.deliveries_per_sec);
        println!(
            "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "count"
        );
        latency_row("send -> ack", &f.ack_latency);
        latency_row("send -> delivery", &f.delivery_latency);
        println!("errors                 {:?}", f.errors);
        println!("connection failures    {}", f.connection_failures);
        println!(
            "closes                 {:?} (stalled: {})",
            f.closes, f.stalled_closes
        );
        let e = &self.exactness;
        if e.ok {
            println!(
                "exactness              OK: {} messages, every recipient once and in order, equal to the {}",
                e.messages_checked, e.checked_against
            );
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

impl Report {
    pub fn print(&self) {
        println!(
            "run {} ({:?}); set-up {:.1} s (not counted as load)",
            self.run_id, self.config.scenario, self.setup_seconds
        );
        if self.steps.len() > 1 {
            println!(
                "{:>10} {:>10} {:>10} {:>10} {:>8} {:>6}",
                "offered/s", "acked/s", "p99 ack", "p99 dlv", "errors", "exact"
            );
            for s in &self.steps {
                let f = &s.figures;
                println!(
                    "{:>10.0} {:>10.0} {:>8.2}ms {:>8.2}ms {:>8} {:>6}",
                    f.rate,
                    f.acked_per_sec,
                    f.ack_latency.p99_ms,
                    f.delivery_latency.p99_ms,
                    f.errors.values().sum::<u64>(),
                    if s.exactness.ok { "ok" } else { "FAIL" }
                );
            }
            match self.knee_rate {
                Some(rate) => println!("knee: {rate:.0} msg/s offered is the fastest step within p99 {} ms and without errors", self.config.p99_bound_ms),
                None => println!("knee: not found (the first step already failed the bound)"),
            }
        }
        if let Some(step) = &self.result {
            step.print();
        }
        if let Some(s) = &self.storm {
            println!(
                "storm                  {} sockets reconnected at once, {} behind per chat",
                s.sockets, s.behind_per_chat
            );
            latency_row("resume -> caught up", &s.caught_up);
            latency_row("send during storm", &s.send_latency);
            println!(
                "storm outcome          {} send errors, {} connect failures, {} closed, {} with a gap or repeat, {} short of the end",
                s.send_errors, s.connect_failures, s.closed, s.gapped, s.short
            );
        }
        if let Some(idle) = &self.idle {
            println!(
                "idle connections       {} ({} failed) opened in {:.1} s",
                idle.connections, idle.connection_failures, idle.connect_seconds
            );
            match idle.bytes_per_connection {
                Some(b) => println!("server memory          {:.0} bytes per idle connection", b),
                None => println!("server memory          unknown (no xfchat_process_resident_memory_bytes at /metrics)"),
            }
        }
    }
}

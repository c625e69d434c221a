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
    /// The measured window's counts and what they cost each side.
    #[serde(default)]
    pub steady: Option<Steady>,
    /// The server's resident memory at the end of the stretch.
    #[serde(default)]
    pub server_rss_bytes: Option<f64>,
}

/// The measured window (past the warm-up, to the end of the sending): what was acked and
/// delivered in it, and the CPU the server and the harness used meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Steady {
    pub seconds: f64,
    pub acked: u64,
    pub delivered: u64,
    pub server_cpu_seconds: f64,
    pub harness_cpu_seconds: f64,
    pub server_cpu_us_per_acked: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Per frame received (acks and deliveries).
    pub harness_cpu_us_per_frame: Option<f64>,
}

/// `burst`: one step's verdict over its trials, with the median and the spread of each figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSummary {
    pub rate: f64,
    pub trials: usize,
    pub passed: bool,
    /// Which trial (in run order) is the median by p99 ack: the step's figures are its.
    pub median_trial: usize,
    pub p99_ack_ms: Spread,
    #[serde(default)]
    pub p99_delivery_ms: Option<Spread>,
    pub acked_per_sec: Spread,
    #[serde(default)]
    pub deliveries_per_sec: Option<Spread>,
    pub errors: Spread,
    /// What the steady window cost, when every trial measured it.
    #[serde(default)]
    pub server_cpu_us_per_acked: Option<Spread>,
    #[serde(default)]
    pub server_cpu_us_per_delivery: Option<Spread>,
    #[serde(default)]
    pub harness_cpu_us_per_frame: Option<Spread>,
    /// The server's resident memory at the end of each trial.
    #[serde(default)]
    pub server_rss_bytes: Option<Spread>,
}

/// A median with the smallest and largest of the values it is the median of.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of values every one of which is known, else None.
    pub fn of_all(values: impl IntoIterator<Item = Option<f64>>) -> Option<Spread> {
        let v: Option<Vec<f64>> = values.into_iter().collect();
        v.filter(|v| !v.is_empty()).map(Spread::of)
    }

    /// The median of `values` (the lower middle one for an even count); none may be NaN.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        Spread {
            median: v[(v.len() - 1) / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

impl StepSummary {
    /// Passes when the median trial by p99 ack passes (within `bound_ms`, no errors, nothing
    /// unanswered) and every trial was exact.
    pub fn of(rate: f64, trials: &[Step], bound_ms: f64) -> StepSummary {
        let mut order: Vec<usize> = (0..trials.len()).collect();
        order.sort_by(|&a, &b| {
            let p99 = |i: usize| trials[i].figures.ack_latency.p99_ms;
            p99(a).total_cmp(&p99(b))
        });
        let median_trial = order[(order.len() - 1) / 2];
        let m = &trials[median_trial].figures;
        let passed = trials.iter().all(|t| t.exactness.ok)
            && m.errors.is_empty()
            && m.unanswered == 0
            && m.ack_latency.p99_ms <= bound_ms;
        let figures = || trials.iter().map(|t| &t.figures);
        StepSummary {
            rate,
            trials: trials.len(),
            passed,
            median_trial,
            p99_ack_ms: Spread::of(figures().map(|f| f.ack_latency.p99_ms)),
            p99_delivery_ms: Some(Spread::of(figures().map(|f| f.delivery_latency.p99_ms))),
            acked_per_sec: Spread::of(figures().map(|f| f.acked_per_sec)),
            deliveries_per_sec: Some(Spread::of(figures().map(|f| f.deliveries_per_sec))),
            errors: Spread::of(figures().map(|f| f.errors.values().sum::<u64>() as f64)),
            server_cpu_us_per_acked: steady(trials, |s| s.server_cpu_us_per_acked),
            server_cpu_us_per_delivery: steady(trials, |s| s.server_cpu_us_per_delivery),
            harness_cpu_us_per_frame: steady(trials, |s| s.harness_cpu_us_per_frame),
            server_rss_bytes: Spread::of_all(trials.iter().map(|t| t.server_rss_bytes)),
        }
    }
}

/// The spread of one steady-window figure over trials that all have it.
fn steady(trials: &[Step], figure: impl Fn(&Steady) -> Option<f64>) -> Option<Spread> {
    Spread::of_all(trials.iter().map(|t| t.steady.as_ref().and_then(&figure)))
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
    /// `burst`: every trial of every step, slowest first.
    pub steps: Vec<Step>,
    /// `burst`: each step's verdict over its trials; the knee is the fastest that passed.
    #[serde(default)]
    pub step_summaries: Vec<StepSummary>,
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
        if !self.step_summaries.is_empty() {
            println!(
                "{:>10} {:>6} {:>22} {:>22} {:>8} {:>6} {:>18} {:>18} {:>18}",
                "offered/s",
                "trials",
                "acked/s (min-max)",
                "p99 ack ms (min-max)",
                "errors",
                "passed",
                "server µs/ack",
                "server µs/deliv.",
                "harness µs/frame"
            );
            let cpu = |s: &Option<Spread>| {
                s.map_or("-".into(), |s| {
                    format!("{:.1} ({:.1}-{:.1})", s.median, s.min, s.max)
                })
            };
            for s in &self.step_summaries {
                let (a, p) = (&s.acked_per_sec, &s.p99_ack_ms);
                println!(
                    "{:>10.0} {:>6} {:>22} {:>22} {:>8.0} {:>6} {:>18} {:>18} {:>18}",
                    s.rate,
                    s.trials,
                    format!("{:.0} ({:.0}-{:.0})", a.median, a.min, a.max),
                    format!("{:.2} ({:.2}-{:.2})", p.median, p.min, p.max),
                    s.errors.median,
                    if s.passed { "yes" } else { "no" },
                    cpu(&s.server_cpu_us_per_acked),
                    cpu(&s.server_cpu_us_per_delivery),
                    cpu(&s.harness_cpu_us_per_frame),
                );
            }
            if self.config.scenario == crate::cli::Scenario::Burst {
                match self.knee_rate {
                    Some(rate) => println!("knee: {rate:.0} msg/s offered is the fastest step whose median trial is within p99 {} ms and without errors", self.config.p99_bound_ms),
                    None => println!("knee: not found (no step passed)"),
                }
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

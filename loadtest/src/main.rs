//! `xfchat-load`: open-loop load against an XFChat server, measured with HDR histograms and
//! checked for exactness at the end. Exits 1 when any acked message was lost, duplicated or
//! reordered, 2 when the run could not be made.

mod cli;
mod client;
mod figures;
mod glance;
mod idle;
mod process;
mod report;
mod resume;
mod run;
mod schedule;
mod setup;
mod storm;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rand::Rng;

use cli::{Args, Cli, Command, Scenario};
use figures::{Figures, Recorded};
use report::{Exactness, Machine, Report, Step, StepSummary};
use setup::{Api, Layout};

/// Seqs per chat.
type Seqs = HashMap<i64, Vec<i64>>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Merge { reports, report }) => merge(&reports, report.as_deref()),
        None => load(cli.args).await,
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xfchat-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the scenario; true when every message was exact.
async fn load(args: Args) -> anyhow::Result<bool> {
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{:06x}", rand::thread_rng().gen::<u32>() & 0xff_ffff));
    let started = std::time::Instant::now();
    let layout = setup::run(&args, &format!("l{run_id}_{}", args.shard))
        .await
        .context("set-up through the HTTP API")?;
    let setup_seconds = started.elapsed().as_secs_f64();
    let (_, _, postgres_version) = stored(&args, &layout).await?;
    let mut report = Report {
        run_id,
        config: args.clone(),
        machine: Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            postgres_version,
        },
        setup_seconds,
        result: None,
        steps: Vec::new(),
        step_summaries: Vec::new(),
        knee_rate: None,
        idle: None,
        storm: None,
        exact: true,
    };
    match args.scenario {
        Scenario::Idle => report.idle = Some(idle::idle(&args, &layout).await),
        Scenario::Reconnect => {
            let (step, _) = step(&args, &layout, args.rate, &Seqs::new()).await?;
            report.exact = step.exactness.ok;
            report.result = Some(step);
        }
        Scenario::Chat | Scenario::Room | Scenario::Slow => {
            fixed(&args, &layout, &mut report).await?
        }
        Scenario::Burst => burst(&args, &layout, &mut report).await?,
        Scenario::Storm => {
            let storm = storm::storm(&args, &layout).await?;
            report.exact = storm.gapped + storm.short + storm.closed + storm.connect_failures == 0;
            report.storm = Some(storm);
        }
    }
    report.print();
    if let Some(path) = &args.report {
        write(path, &report)?;
    }
    Ok(report.exact)
}

/// Runs `--trials` stretches at each of `--rates` (or at `--rate`), summarising each rate over
/// its trials; the headline is the first rate's median trial.
async fn fixed(args: &Args, layout: &Layout, report: &mut Report) -> anyhow::Result<()> {
    let rates = if args.rates.is_empty() {
        vec![args.rate]
    } else {
        args.rates.clone()
    };
    let mut before = stored(args, layout).await?.0;
    for rate in rates {
        let trials = trials(args, layout, rate, &mut before, report).await?;
        let summary = StepSummary::of(rate, &trials, args.p99_bound_ms);
        if report.result.is_none() {
            report.result = Some(trials[summary.median_trial].clone());
        }
        report.step_summaries.push(summary);
    }
    Ok(())
}

/// `--trials` stretches at `rate`, each recorded in the report.
async fn trials(
    args: &Args,
    layout: &Layout,
    rate: f64,
    before: &mut Seqs,
    report: &mut Report,
) -> anyhow::Result<Vec<Step>> {
    let mut trials = Vec::new();
    for trial in 1..=args.trials {
        eprintln!(
            "xfchat-load: {rate:.0} msg/s, trial {trial} of {}",
            args.trials
        );
        let (step, after) = step(args, layout, rate, before).await?;
        *before = after;
        report.exact &= step.exactness.ok;
        report.steps.push(step.clone());
        trials.push(step);
    }
    Ok(trials)
}

/// Steps the rate up, `--trials` stretches per step, judging each step on its median stretch.
/// A failing step runs once more at the same rate, and the search ends only when it fails
/// again: one spike cannot end it, and it never goes past the first rate that failed twice.
/// Then `--bisect` steps narrow the gap between the last rate that passed and the first that
/// failed. The knee is the fastest step that passed.
async fn burst(args: &Args, layout: &Layout, report: &mut Report) -> anyhow::Result<()> {
    let mut rate = args.rate;
    let mut before = stored(args, layout).await?.0;
    let mut failed_once = false;
    for _ in 0..args.max_steps {
        if judged(args, layout, rate, &mut before, report).await? {
            failed_once = false;
            rate *= args.burst_step;
        } else if failed_once {
            break;
        } else {
            failed_once = true;
        }
    }
    // Between the last rate that passed and the first that failed (twice), halve the gap.
    let failed_at = failed_once.then_some(rate);
    if let (Some(mut low), Some(mut high)) = (report.knee_rate, failed_at) {
        for _ in 0..args.bisect {
            if high / low < 1.05 {
                break;
            }
            let mid = (low * high).sqrt();
            if judged(args, layout, mid, &mut before, report).await? {
                low = mid;
            } else {
                high = mid;
            }
        }
    }
    if report.result.is_none() {
        report.result = report.steps.first().cloned();
    }
    Ok(())
}

/// One step of the search: `--trials` stretches at `rate`, judged on their median. A step that
/// passes becomes the knee. True when it passed.
async fn judged(
    args: &Args,
    layout: &Layout,
    rate: f64,
    before: &mut Seqs,
    report: &mut Report,
) -> anyhow::Result<bool> {
    let mut trials = trials(args, layout, rate, before, report).await?;
    let summary = StepSummary::of(rate, &trials, args.p99_bound_ms);
    let passed = summary.passed;
    let median = trials.swap_remove(summary.median_trial);
    report.step_summaries.push(summary);
    if passed {
        report.knee_rate = Some(rate);
        report.result = Some(median);
    }
    Ok(passed)
}

/// One measured stretch at `rate`, verified against what was stored since `before`.
async fn step(
    args: &Args,
    layout: &Layout,
    rate: f64,
    before: &Seqs,
) -> anyhow::Result<(Step, Seqs)> {
    let mut args = args.clone();
    args.rate = rate;
    let cpu_before = process::server(&args).await.map(|u| u.cpu_seconds);
    let driven = run::drive(&args, layout, !args.quiet).await;
    let cpu_after = process::server(&args).await.map(|u| u.cpu_seconds);
    if driven.undelivered > 0 {
        eprintln!(
            "xfchat-load: {} deliveries of acked messages had not come when the drain ended",
            driven.undelivered
        );
    }
    let mut acked: Seqs = HashMap::new();
    let (mut ack_us, mut delivery_us) = (figures::histogram(), figures::histogram());
    let (mut errors, mut closes) = (BTreeMap::new(), BTreeMap::new());
    let (mut sent, mut acks_measured, mut deliveries_measured) = (0, 0, 0);
    for r in &driven.results {
        for &(chat, seq) in &r.acked {
            acked.entry(chat).or_default().push(seq);
        }
        ack_us.add(&r.ack_us).expect("same bounds");
        delivery_us.add(&r.delivery_us).expect("same bounds");
        for (code, n) in &r.errors {
            *errors.entry(code.clone()).or_insert(0) += n;
        }
        if let Some(reason) = &r.close {
            *closes.entry(reason.clone()).or_insert(0) += 1;
        }
        sent += r.sent;
        acks_measured += r.acks_measured;
        deliveries_measured += r.deliveries_measured;
    }
    for reason in driven.slow_closes.iter().flatten() {
        *closes
            .entry(format!("{reason} (non-reading socket)"))
            .or_insert(0) += 1;
    }
    let stalled_closes = closes
        .iter()
        .filter(|(reason, _)| reason.starts_with("stalled"))
        .map(|(_, n)| n)
        .sum();
    let (after, checked_against, _) = stored(&args, layout).await?;
    let expected: Seqs = after
        .iter()
        .map(|(chat, seqs)| {
            let old = before.get(chat).map(Vec::len).unwrap_or(0) as i64;
            (*chat, seqs.iter().copied().filter(|&s| s > old).collect())
        })
        .collect();
    let logs: Vec<_> = driven.results.iter().map(|r| r.log.clone()).collect();
    let problems = verify::check(&acked, &logs, Some(&expected));
    let figures = Figures::from(Recorded {
        rate,
        measured_seconds: args.duration,
        connections: driven.results.len(),
        connection_failures: driven.failures,
        sent,
        acked: acked.values().map(|v| v.len() as u64).sum(),
        unanswered: driven.unanswered,
        acks_measured,
        deliveries_measured,
        ack_us,
        delivery_us,
        errors,
        closes,
        stalled_closes,
    });
    let exactness = Exactness {
        ok: problems.is_empty() && driven.failures == 0,
        checked_against: checked_against.to_owned(),
        messages_checked: expected.values().map(Vec::len).sum(),
        problems: problems.len(),
        first_problems: problems.into_iter().take(10).collect(),
    };
    let server_cpu_seconds = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
    Ok((
        Step {
            figures,
            exactness,
            server_cpu_seconds,
            steady: driven.steady,
            server_rss_bytes: driven.server_rss_bytes,
        },
        after,
    ))
}

fn write(path: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("write {}", path.display()))
}

/// Combines reports of processes that shared a run.
fn merge(paths: &[PathBuf], out: Option<&Path>) -> anyhow::Result<bool> {
    let reports: Vec<Report> = paths
        .iter()
        .map(|p| {
            let text = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
            serde_json::from_slice(&text).with_context(|| format!("parse {}", p.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let first = reports.first().context("no reports")?;
    let results: Vec<&Step> = reports.iter().filter_map(|r| r.result.as_ref()).collect();
    let figures = Figures::merge(
        &results
            .iter()
            .map(|s| s.figures.clone())
            .collect::<Vec<_>>(),
    )?;
    let exact = reports.iter().all(|r| r.exact);
    let mut problems: Vec<verify::Problem> = results
        .iter()
        .flat_map(|s| s.exactness.first_problems.clone())
        .collect();
    problems.truncate(10);
    let merged = Report {
        run_id: first.run_id.clone(),
        config: first.config.clone(),
        machine: first.machine.clone(),
        setup_seconds: reports.iter().map(|r| r.setup_seconds).fold(0.0, f64::max),
        result: Some(Step {
            figures,
            exactness: Exactness {
                ok: exact,
                checked_against: first
                    .result
                    .as_ref()
                    .map(|s| s.exactness.checked_against.clone())
                    .unwrap_or_default(),
                messages_checked: results.iter().map(|s| s.exactness.messages_checked).sum(),
                problems: results.iter().map(|s| s.exactness.problems).sum(),
                first_problems: problems,
            },
            server_cpu_seconds: None,
            steady: None,
            server_rss_bytes: None,
        }),
        steps: Vec::new(),
        step_summaries: Vec::new(),
        knee_rate: None,
        idle: None,
        storm: None,
        exact,
    };
    merged.print();
    if let Some(path) = out {
        write(path, &merged)?;
    }
    Ok(exact)
}

/// The seqs stored for the run's chats: from the database when given, else the history API.
async fn stored(
    args: &Args,
    layout: &Layout,
) -> anyhow::Result<(Seqs, &'static str, Option<String>)> {
    let chat_ids: Vec<i64> = layout.chats.iter().map(|(c, _)| *c).collect();
    let mut stored: Seqs = HashMap::new();
    if let Some(url) = &args.database_url {
        let pool = sqlx::PgPool::connect(url)
            .await
            .context("connect to --database-url")?;
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT conversation_id, seq FROM messages WHERE conversation_id = ANY($1) ORDER BY seq")
                .bind(&chat_ids)
                .fetch_all(&pool)
                .await?;
        for (chat, seq) in rows {
            stored.entry(chat).or_default().push(seq);
        }
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        return Ok((stored, "database", Some(version)));
    }
    let api = Api::new(&args.url);
    for (chat, members) in &layout.chats {
        let token = &layout.accounts[members[0]].token;
        let mut after = 0;
        loop {
            let path = format!("/api/chats/{chat}/messages?after_seq={after}&limit=200");
            let page = api
                .call(
                    reqwest::Method::GET,
                    &path,
                    Some(token),
                    serde_json::Value::Null,
                )
                .await?;
            let seqs: Vec<i64> = page["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["seq"].as_i64())
                .collect();
            let Some(&last) = seqs.last() else { break };
            stored.entry(*chat).or_default().extend(seqs);
            after = last;
        }
    }
    Ok((stored, "history API", None))
}

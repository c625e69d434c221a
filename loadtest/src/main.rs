//! `xfchat-load`: open-loop load against an XFChat server, measured with HDR histograms and
//! checked for exactness at the end. Exits 1 when any acked message was lost, duplicated or
//! reordered, 2 when the run could not be made.

mod cli;
mod report;
mod run;
mod schedule;
mod setup;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rand::Rng;

use cli::Args;
use report::{Exactness, Machine, Report};
use setup::{Api, Layout};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match load(args).await {
        Ok(report) if report.exactness.ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xfchat-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn load(args: Args) -> anyhow::Result<Report> {
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{:06x}", rand::thread_rng().gen::<u32>() & 0xff_ffff));
    let started = std::time::Instant::now();
    let layout = setup::run(&args, &run_id)
        .await
        .context("set-up through the HTTP API")?;
    let setup_seconds = started.elapsed().as_secs_f64();
    let driven = run::drive(&args, &layout, !args.quiet).await;

    let mut acked: HashMap<i64, Vec<i64>> = HashMap::new();
    let (mut ack_us, mut delivery_us) = (run::histogram(), run::histogram());
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
            .entry(format!("{reason} (slow consumer socket)"))
            .or_insert(0) += 1;
    }
    let slow_consumer_closes = driven
        .slow_closes
        .iter()
        .flatten()
        .filter(|r| r.as_str() == "slow consumer")
        .count() as u64
        + closes.get("slow consumer").copied().unwrap_or(0);
    let (stored, checked_against, postgres_version) = stored(&args, &layout).await?;
    let logs: Vec<_> = driven.results.iter().map(|r| r.log.clone()).collect();
    let problems = verify::check(&acked, &logs, Some(&stored));
    let report = Report {
        run_id,
        machine: Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            postgres_version,
        },
        setup_seconds,
        connections: driven.results.len(),
        connection_failures: driven.failures,
        sent,
        acked: acked.values().map(|v| v.len() as u64).sum(),
        unanswered: driven.unanswered,
        acked_per_sec: acks_measured as f64 / args.duration,
        deliveries_per_sec: deliveries_measured as f64 / args.duration,
        ack_latency: (&ack_us).into(),
        delivery_latency: (&delivery_us).into(),
        slow_consumer_closes,
        errors,
        closes,
        exactness: Exactness {
            ok: problems.is_empty() && driven.failures == 0,
            checked_against,
            messages_checked: stored.values().map(Vec::len).sum(),
            problems: problems.len(),
            first_problems: problems.into_iter().take(10).collect(),
        },
        config: args.clone(),
    };
    report.print();
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(report)
}

/// The seqs stored for the run's chats: from the database when given, else the history API.
async fn stored(
    args: &Args,
    layout: &Layout,
) -> anyhow::Result<(HashMap<i64, Vec<i64>>, &'static str, Option<String>)> {
    let chat_ids: Vec<i64> = layout.chats.iter().map(|(c, _)| *c).collect();
    let mut stored: HashMap<i64, Vec<i64>> = HashMap::new();
    if let Some(url) = &args.database_url {
        let pool = sqlx::PgPool::connect(url)
            .await
            .context("connect to --database-url")?;
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT conversation_id, seq FROM messages WHERE conversation_id = ANY($1)",
        )
        .bind(&chat_ids)
        .fetch_all(&pool)
        .await?;
        for (chat, seq) in rows {
            stored.entry(chat).or_default().push(seq);
        }
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&pool)
            .await?;
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

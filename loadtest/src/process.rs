//! What the harness reads of processes: the server's CPU time and resident memory (from
//! `/proc/<pid>` with `--server-pid`, else from the server's own `/metrics`) and its own CPU time,
//! so a step can say what a message cost on each side.

use crate::cli::Args;

/// CPU seconds used so far and resident bytes now.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: f64,
}

/// The server's usage: from `/proc` when its pids are given (the baseline has no `/metrics`),
/// the nodes' added up, else from its `xfchat_process_*` metrics.
pub async fn server(args: &Args) -> Option<Usage> {
    if !args.server_pid.is_empty() {
        return args
            .server_pid
            .iter()
            .map(|pid| read(&format!("/proc/{pid}")))
            .try_fold(
                Usage {
                    cpu_seconds: 0.0,
                    rss_bytes: 0.0,
                },
                |sum, one| {
                    let one = one?;
                    Some(Usage {
                        cpu_seconds: sum.cpu_seconds + one.cpu_seconds,
                        rss_bytes: sum.rss_bytes + one.rss_bytes,
                    })
                },
            );
    }
    let text = reqwest::get(format!("{}/metrics", args.url))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(Usage {
        cpu_seconds: metric(&text, "xfchat_process_cpu_seconds_total")?,
        rss_bytes: metric(&text, RSS)?,
    })
}

/// The harness's own usage.
pub fn own() -> Option<Usage> {
    read("/proc/self")
}

pub const RSS: &str = "xfchat_process_resident_memory_bytes";

/// One unlabelled figure of a Prometheus text page.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads `stat` (utime and stime, fields 14 and 15, in clock ticks) and `status` (`VmRSS`, in
/// kB) of a `/proc` directory.
fn read(dir: &str) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name, field 2, may hold spaces: count fields after its closing parenthesis.
    let mut after = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: f64 = after.nth(11)?.parse().ok()?;
    let stime: f64 = after.next()?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Usage {
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        rss_bytes: rss_kb * 1024.0,
    })
}

/// Linux reports `/proc` times in USER_HZ, which is 100 on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_reads_its_own_cpu_and_memory() {
        let usage = own().expect("/proc/self is readable");
        assert!(usage.rss_bytes > 0.0);
        let before = usage.cpu_seconds;
        let mut x = 0u64;
        for i in 0..200_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(
            own().unwrap().cpu_seconds > before,
            "busy work shows as CPU"
        );
    }

    #[test]
    fn a_metric_is_read_by_its_exact_name() {
        let text = "xfchat_process_cpu_seconds_total_x 9\nxfchat_process_cpu_seconds_total 1.5\n";
        assert_eq!(metric(text, "xfchat_process_cpu_seconds_total"), Some(1.5));
    }
}

"""Reads the harness reports and pgbench's rate of one `scripts/bench` run, prints the table and
writes target/bench/report.json with every figure and the ratios."""

import datetime
import json
import os
import platform
import subprocess
import sys


def load(path):
    return json.load(open(path))


def knee(report):
    """The fastest step that passed, or the first step when none did."""
    return report["result"]["figures"] if report.get("result") else None


def spread(values):
    """The median (the lower middle one for an even count) with the smallest and largest value."""
    v = sorted(values)
    return {"median": v[(len(v) - 1) // 2], "min": v[0], "max": v[-1]}


def knee_summary(report):
    """The knee step's verdict over its trials, when the search found a knee."""
    return next((s for s in report.get("step_summaries", []) if s["rate"] == report.get("knee_rate")), None)


def sustained(report):
    """A burst search's sustained rate: the median over its knee step's trials (a single
    stretch's without trials), with the range."""
    step = knee_summary(report)
    if step:
        return step["acked_per_sec"]
    rate = knee(report)["acked_per_sec"]
    return {"median": rate, "min": rate, "max": rate}


def summary_at(report):
    """A fixed-rate run's first rate over its trials: p99 delivery and CPU per acked message,
    each a median with its range (CPU None when the steady window was not measured)."""
    s = report["step_summaries"][0] if report.get("step_summaries") else None
    f = report["result"]["figures"]
    p99 = f["delivery_latency"]["p99_ms"]
    one = lambda v: None if v is None else {"median": v, "min": v, "max": v}
    return {
        "delivery_p99": (s or {}).get("p99_delivery_ms") or one(p99),
        "cpu": (s or {}).get("server_cpu_us_per_acked") or one(cpu_per_ack(report)),
    }


def fixed_rate(summary, base=None):
    """One fixed rate's figures over its trials, beside the baseline's CPU per acked message at
    that rate (2-member chats, the same socket work) and the ratio of the medians."""
    keys = ("acked_per_sec", "p99_ack_ms", "server_cpu_us_per_acked", "harness_cpu_us_per_frame", "server_rss_bytes")
    row = {"rate": summary["rate"], "passed": summary["passed"]} | {k: summary.get(k) for k in keys}
    hc, bc = summary.get("server_cpu_us_per_acked"), (base or {}).get("server_cpu_us_per_acked")
    return row | {
        "baseline_cpu_us_per_acked": bc,
        "baseline_p99_ack_ms": (base or {}).get("p99_ack_ms"),
        "hub_over_baseline": hc["median"] / bc["median"] if hc and bc and bc["median"] else None,
    }


def fanout_cpu(hub, base):
    """Per rate both servers ran: their CPU per delivery, the harness's per frame, and the ratio
    of the medians."""
    base_at = {s["rate"]: s for s in base["step_summaries"]}
    rows = []
    for h in hub["step_summaries"]:
        b = base_at.get(h["rate"])
        if not b:
            continue
        hc, bc = h.get("server_cpu_us_per_delivery"), b.get("server_cpu_us_per_delivery")
        rows.append({
            "rate": h["rate"],
            "hub_deliveries_per_sec": h.get("deliveries_per_sec"),
            "baseline_deliveries_per_sec": b.get("deliveries_per_sec"),
            "hub_cpu_us_per_delivery": hc,
            "baseline_cpu_us_per_delivery": bc,
            "hub_over_baseline": hc["median"] / bc["median"] if hc and bc and bc["median"] else None,
            "harness_cpu_us_per_frame": {"hub": h.get("harness_cpu_us_per_frame"), "baseline": b.get("harness_cpu_us_per_frame")},
        })
    return rows


def cpu_per_ack(report):
    """The servers' CPU per acked message over a single-rate run's steady window (every node's
    when the harness was given their pids), or None."""
    return (report["result"].get("steady") or {}).get("server_cpu_us_per_acked")


def rss_at_end(report):
    """The server's resident memory after the scenario's last stretch."""
    steps = report.get("steps") or ([report["result"]] if report.get("result") else [])
    return steps[-1].get("server_rss_bytes") if steps else None


def main(work, out, mode):
    pg = json.load(open(os.path.join(work, "pgbench.json")))
    pg |= {"tps": spread(pg["trials"])["median"], "tps_spread": spread(pg["trials"])}
    hub = load(os.path.join(work, "hub-chat-burst.json"))
    half = load(os.path.join(work, "hub-chat-half.json"))
    room_hub = load(os.path.join(work, "hub-room-burst.json"))
    room_base = load(os.path.join(work, "baseline-room-burst.json"))
    idle = load(os.path.join(work, "hub-idle.json"))
    storm = json.load(open(os.path.join(work, "password-storm.json")))
    one_burst, two_burst = (load(os.path.join(work, f"{n}-node-burst.json")) for n in ("one", "two"))
    one_half, two_half = (load(os.path.join(work, f"{n}-node-half.json")) for n in ("one", "two"))
    cpu = {"cpu_seconds": half["result"]["server_cpu_seconds"], "acked": half["result"]["figures"]["acked"]}
    fixed = load(os.path.join(work, "hub-chat-fixed.json"))
    fixed_base = load(os.path.join(work, "baseline-chat-fixed.json"))
    base_at = {b["rate"]: b for b in fixed_base["step_summaries"]}
    fixed_rates = [fixed_rate(s, base_at.get(s["rate"])) for s in fixed["step_summaries"]]
    room_fixed = {n: load(os.path.join(work, f"{n}-room-fixed.json")) for n in ("hub", "baseline")}
    fanout = fanout_cpu(room_fixed["hub"], room_fixed["baseline"])
    named = {
        "hub_chat_burst": hub, "hub_chat_half": half, "hub_chat_fixed": fixed, "baseline_chat_fixed": fixed_base,
        "hub_room_burst": room_hub, "hub_room_fixed": room_fixed["hub"],
        "baseline_room_burst": room_base, "baseline_room_fixed": room_fixed["baseline"],
        "one_node_burst": one_burst, "one_node_half": one_half,
        "two_nodes_burst": two_burst, "two_nodes_half": two_half,
    }

    hub_k, half_f = knee(hub), half["result"]["figures"]
    # The sustained rate: the median over the knee step's trials (a single stretch without one).
    hub_step = knee_summary(hub)
    hub_sustained = hub_step["acked_per_sec"]["median"] if hub_step else hub_k["acked_per_sec"]
    room_hub_k, room_base_k = knee(room_hub), knee(room_base)
    exact = all(r["exact"] for r in named.values())
    one_k, two_k = knee(one_burst), knee(two_burst)
    one_h, two_h = one_half["result"]["figures"], two_half["result"]["figures"]
    # Two nodes against one: the medians over trials (a single stretch's figure without them).
    one_sustained, two_sustained = (sustained(r) for r in (one_burst, two_burst))
    one_s, two_s = (summary_at(r) for r in (one_half, two_half))
    ratios = {
        "hub_acked_per_sec_over_pgbench_tps": hub_sustained / pg["tps"] if pg["tps"] else None,
        "hub_deliveries_over_baseline_deliveries": (
            room_hub_k["deliveries_per_sec"] / room_base_k["deliveries_per_sec"] if room_base_k["deliveries_per_sec"] else None
        ),
        "bytes_per_idle_connection": idle["idle"]["bytes_per_connection"],
        "two_nodes_sustained_over_one_node": (
            two_sustained["median"] / one_sustained["median"] if one_sustained["median"] else None
        ),
        "two_nodes_cpu_per_ack_over_one_node": (
            two_s["cpu"]["median"] / one_s["cpu"]["median"] if one_s["cpu"] and two_s["cpu"] and one_s["cpu"]["median"] else None
        ),
        "cross_node_delivery_p99_over_one_node": (
            two_s["delivery_p99"]["median"] / one_s["delivery_p99"]["median"] if one_s["delivery_p99"]["median"] else None
        ),
        # Over the steady window when the harness measured one, else over the whole stretch.
        "cpu_us_per_acked_message": (half["result"].get("steady") or {}).get("server_cpu_us_per_acked") or (
            cpu["cpu_seconds"] * 1e6 / cpu["acked"] if cpu["acked"] and cpu["cpu_seconds"] is not None else None
        ),
        "hub_cpu_per_delivery_over_baseline": fanout[-1]["hub_over_baseline"] if fanout else None,
        # 2-member chats at the lowest and the highest fixed rate.
        "hub_cpu_per_ack_over_baseline_lowest_rate": fixed_rates[0]["hub_over_baseline"] if fixed_rates else None,
        "hub_cpu_per_ack_over_baseline_highest_rate": fixed_rates[-1]["hub_over_baseline"] if fixed_rates else None,
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {
        "mode": mode,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or None,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "postgres_version": hub["machine"].get("postgres_version"),
        },
        "pgbench": pg,
        "hub_chat": {
            "knee_rate": hub.get("knee_rate"),
            "sustained_acked_per_sec": hub_sustained,
            "p99_ack_ms_at_knee": hub_k["ack_latency"]["p99_ms"],
            "trials": hub["config"]["trials"],
            "knee_step": hub_step,
            "step_summaries": hub.get("step_summaries", []),
            "steps": [s["figures"] | {"exact": s["exactness"]["ok"]} for s in hub["steps"]],
        },
        "hub_chat_at_half": {
            "rate": half_f["rate"],
            "acked_per_sec": half_f["acked_per_sec"],
            "ack_latency": half_f["ack_latency"],
            "delivery_latency": half_f["delivery_latency"],
        },
        "room": {
            "hub_knee_rate": room_hub.get("knee_rate"),
            "hub_deliveries_per_sec": room_hub_k["deliveries_per_sec"],
            "baseline_knee_rate": room_base.get("knee_rate"),
            "baseline_deliveries_per_sec": room_base_k["deliveries_per_sec"],
        },
        "two_nodes": {
            "layout": "2-member chats, members on different nodes: every delivery crosses",
            "one_node_knee_rate": one_burst.get("knee_rate"),
            "one_node_sustained_acked_per_sec": one_sustained,
            "two_nodes_knee_rate": two_burst.get("knee_rate"),
            "two_nodes_sustained_acked_per_sec": two_sustained,
            "rate": one_h["rate"],
            "trials": one_half["config"]["trials"],
            "one_node": {"ack_latency": one_h["ack_latency"], "delivery_latency": one_h["delivery_latency"],
                         "delivery_p99_ms": one_s["delivery_p99"], "server_cpu_us_per_acked": one_s["cpu"]},
            "two_nodes": {"ack_latency": two_h["ack_latency"], "delivery_latency": two_h["delivery_latency"],
                          "delivery_p99_ms": two_s["delivery_p99"], "server_cpu_us_per_acked": two_s["cpu"]},
        },
        "cpu_at_fixed_rates": {
            "layout": "2-member chats, %d sockets; the server's CPU over the steady window per acked message"
            % fixed["config"]["connections"],
            "trials": fixed["config"]["trials"],
            "rates": fixed_rates,
        },
        "fanout_cpu": {
            "layout": "one room of %d sockets, hub and baseline at the same offered rates"
            % room_fixed["hub"]["config"]["connections"],
            "trials": room_fixed["hub"]["config"]["trials"],
            "rates": fanout,
        },
        "server_rss_bytes_at_end": {name: rss_at_end(r) for name, r in named.items()},
        "idle": idle["idle"],
        "password_storm": storm,
        "cpu": cpu,
        "ratios": ratios,
        "exact": exact,
    }
    for key in ("steps",):
        for s in report["hub_chat"][key]:
            s.pop("ack_histogram", None)
            s.pop("delivery_histogram", None)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    json.dump(report, open(out, "w"), indent=2)

    def fmt(v, spec=",.0f"):
        return "n/a" if v is None else format(v, spec)

    def fmt_spread(v, spec=",.0f"):
        if v is None:
            return "n/a"
        if v["min"] == v["max"]:
            return fmt(v["median"], spec)
        return "%s (%s-%s)" % (fmt(v["median"], spec), fmt(v["min"], spec), fmt(v["max"], spec))

    rows = [
        ("PostgreSQL alone (pgbench, %d clients, median of %d): stored msgs/s" % (pg["clients"], len(pg["trials"])), fmt(pg["tps"])),
        ("Hub, chat: sustained acked msgs/s (p99 ack <= %s ms, exact)" % hub["config"]["p99_bound_ms"], fmt(hub_sustained)),
        ("  p99 send->ack at that rate (ms)", fmt(hub_k["ack_latency"]["p99_ms"], ".2f")),
        ("Hub, chat at half that rate (%s msgs/s): p99 send->ack (ms)" % fmt(half_f["rate"]), fmt(half_f["ack_latency"]["p99_ms"], ".2f")),
        ("  p99 send->delivery (ms)", fmt(half_f["delivery_latency"]["p99_ms"], ".2f")),
        ("Hub, room of %d: deliveries/s at its knee" % room_hub["config"]["connections"], fmt(room_hub_k["deliveries_per_sec"])),
        ("No-database baseline, same room: deliveries/s at its knee", fmt(room_base_k["deliveries_per_sec"])),
        ("One node, 2-member chats: sustained acked msgs/s", fmt_spread(one_sustained)),
        ("Two nodes, members on different nodes: sustained acked msgs/s", fmt_spread(two_sustained)),
        ("At %s msgs/s: p99 send->delivery, one node (ms)" % fmt(one_h["rate"]), fmt_spread(one_s["delivery_p99"], ".1f")),
        ("  p99 send->delivery across nodes (ms)", fmt_spread(two_s["delivery_p99"], ".1f")),
        ("  servers' CPU per acked message, one node (us)", fmt_spread(one_s["cpu"], ".0f")),
        ("  servers' CPU per acked message, two nodes (us)", fmt_spread(two_s["cpu"], ".0f")),
        ("Idle sockets held", fmt(idle["idle"]["connections"])),
        ("RATIO hub acked/s / pgbench tps", fmt(ratios["hub_acked_per_sec_over_pgbench_tps"], ".2f")),
        ("RATIO hub deliveries/s / baseline deliveries/s", fmt(ratios["hub_deliveries_over_baseline_deliveries"], ".2f")),
        ("RATIO two nodes sustained / one node", fmt(ratios["two_nodes_sustained_over_one_node"], ".2f")),
        ("RATIO cross-node delivery p99 / one node", fmt(ratios["cross_node_delivery_p99_over_one_node"], ".2f")),
        ("RATIO two nodes' CPU per acked message / one node's, same rate", fmt(ratios["two_nodes_cpu_per_ack_over_one_node"], ".2f")),
        ("Server bytes per idle connection", fmt(ratios["bytes_per_idle_connection"])),
        (
            "Resident memory after %d signups + %d logins, over idle (MiB)" % (storm["accounts"], storm["accounts"]),
            fmt(storm["grown_bytes"] / (1024 * 1024), ".1f"),
        ),
        ("Server CPU microseconds per acked message", fmt(ratios["cpu_us_per_acked_message"], ".1f")),
    ] + [
        ("  at %s msgs/s, 2-member chats, median of trials: hub / baseline (us)" % fmt(f["rate"]),
         "%s / %s" % (fmt((f["server_cpu_us_per_acked"] or {}).get("median"), ".1f"),
                      fmt((f["baseline_cpu_us_per_acked"] or {}).get("median"), ".1f")))
        for f in report["cpu_at_fixed_rates"]["rates"]
    ] + [
        ("RATIO hub CPU per acked message / baseline, lowest fixed rate", fmt(ratios["hub_cpu_per_ack_over_baseline_lowest_rate"], ".2f")),
        ("RATIO hub CPU per acked message / baseline, highest fixed rate", fmt(ratios["hub_cpu_per_ack_over_baseline_highest_rate"], ".2f")),
    ] + [
        ("Room at %s msgs/s: CPU us per delivery, hub / baseline" % fmt(f["rate"]),
         "%s / %s" % (fmt((f["hub_cpu_us_per_delivery"] or {}).get("median"), ".2f"), fmt((f["baseline_cpu_us_per_delivery"] or {}).get("median"), ".2f")))
        for f in fanout
    ] + [
        ("RATIO hub CPU per delivery / baseline (highest common rate)", fmt(ratios["hub_cpu_per_delivery_over_baseline"], ".2f")),
        ("Exactness (every harness run)", "OK" if exact else "FAILED"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    print(f"XFChat benchmark ({mode}; {os.cpu_count()} CPUs, PostgreSQL {report['machine']['postgres_version']})")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>12}")
    print(f"\nfull report: {out}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

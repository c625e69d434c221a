"""Writes the README's performance figures from a `scripts/bench` report, between the markers
`<!-- perf:begin -->` and `<!-- perf:end -->`, so that no figure there is ever typed by hand.
With --check, fails when the README does not hold what this would write.

usage: render_perf.py [--check] REPORT README"""

import json
import sys

from generated import write_or_check

BEGIN, END = "<!-- perf:begin -->", "<!-- perf:end -->"


def fmt(v, spec=",.0f"):
    return "n/a" if v is None else format(v, spec)


def ms(v):
    return "n/a" if v is None else f"{v:.1f} ms"


def sustained(knee_rate, acked):
    """The sustained rate (a median with its range when measured in trials), or that no step of
    the search stayed within the bound."""
    shown = spread(acked) if isinstance(acked, dict) else fmt(acked)
    return shown if knee_rate is not None else f"none within the bound (first step: {shown})"


def ms_spread(v):
    """Milliseconds, a median with its range when measured in trials."""
    if isinstance(v, dict):
        return f"{v['median']:.1f} ms ({v['min']:.1f}–{v['max']:.1f})"
    return ms(v)


def spread(s, spec=",.0f"):
    """A median with its range over the trials, e.g. `5,055 (4,760–5,270)`."""
    return f"{fmt(s['median'], spec)} ({fmt(s['min'], spec)}–{fmt(s['max'], spec)})"


def render(r):
    m, chat, half, room, two = r["machine"], r["hub_chat"], r["hub_chat_at_half"], r["room"], r["two_nodes"]
    ratios, storm = r["ratios"], r["password_storm"]
    trials, knee_step = chat.get("trials", 1), chat.get("knee_step")
    if trials > 1:
        measured = (
            "pgbench's rate, each step of the hub's chat-mix search and every fixed rate of the CPU tables"
            if r.get("cpu_at_fixed_rates")
            else "pgbench's rate and each step of the hub's chat-mix search"
        )
        method = (
            f"{measured} are medians of {trials} trials "
            "(their range in brackets); a step passes on its median trial, and a failing step runs "
            "again at the same rate before it ends the search. The other figures are single "
            "measurements."
        )
        pg_tps = spread(r["pgbench"]["tps_spread"])
        hub_rate = spread(knee_step["acked_per_sec"]) if knee_step else sustained(None, chat["sustained_acked_per_sec"])
    else:
        method = (
            "One run: each figure is a single measurement, not a median of trials, and runs on "
            "this machine have differed by more than 2× (see the issue notes)."
        )
        pg_tps = fmt(r["pgbench"]["tps"])
        hub_rate = sustained(chat["knee_rate"], chat["sustained_acked_per_sec"])
    lines = [
        BEGIN,
        f"Written by `scripts/lib/render_perf.py` from `docs/bench/report.json`: `scripts/bench` in "
        f"{r['mode']} mode on {r.get('date', 'an unrecorded date')} (commit {r.get('commit') or 'unrecorded'}), "
        f"{m['cpus']} CPUs shared by the server, the harness and PostgreSQL "
        f"{(m.get('postgres_version') or '?').split(' ')[0]}; {m['platform']}. {method}",
        "",
        "| | |",
        "|---|---:|",
        f"| PostgreSQL alone (pgbench, {r['pgbench']['clients']} clients): stored messages/s | {pg_tps} |",
        f"| Hub, chat mix: sustained acked messages/s (p99 ack ≤ 50 ms, exact) | {hub_rate} |",
        f"| p99 send→ack at that rate | {ms(chat['p99_ack_ms_at_knee'])} |",
        f"| Hub at half that rate ({fmt(half['rate'])}/s): p99 send→ack / send→delivery | "
        f"{ms(half['ack_latency']['p99_ms'])} / {ms(half['delivery_latency']['p99_ms'])} |",
        f"| Hub, one room: deliveries/s at its knee | {sustained(room['hub_knee_rate'], room['hub_deliveries_per_sec'])} |",
        f"| Baseline without a database, same room: deliveries/s at its knee | {sustained(room['baseline_knee_rate'], room['baseline_deliveries_per_sec'])} |",
        f"| One node, 2-member chats: sustained acked messages/s | {sustained(two.get('one_node_knee_rate', 0), two['one_node_sustained_acked_per_sec'])} |",
        f"| Two nodes, every delivery crossing: sustained acked messages/s | {sustained(two.get('two_nodes_knee_rate', 0), two['two_nodes_sustained_acked_per_sec'])} |",
        f"| At {fmt(two['rate'])} msg/s: p99 send→delivery, one node / across two | "
        f"{ms_spread(two['one_node'].get('delivery_p99_ms') or two['one_node']['delivery_latency']['p99_ms'])} / "
        f"{ms_spread(two['two_nodes'].get('delivery_p99_ms') or two['two_nodes']['delivery_latency']['p99_ms'])} |",
    ] + ([
        f"| At that rate: servers' CPU per acked message, one node / two nodes | "
        f"{spread(two['one_node']['server_cpu_us_per_acked'])} µs / {spread(two['two_nodes']['server_cpu_us_per_acked'])} µs |",
    ] if isinstance(two["one_node"].get("server_cpu_us_per_acked"), dict)
        and isinstance(two["two_nodes"].get("server_cpu_us_per_acked"), dict) else []) + [
        f"| **Hub acked/s ÷ pgbench single-row tps** | **{fmt(ratios['hub_acked_per_sec_over_pgbench_tps'], '.2f')}** |",
        f"| **Hub deliveries/s ÷ baseline deliveries/s** | **{fmt(ratios['hub_deliveries_over_baseline_deliveries'], '.2f')}** |",
    ] + ([
        f"| **Hub CPU per acked message ÷ baseline's, 2-member chats at {fmt(r['cpu_at_fixed_rates']['rates'][0]['rate'])} / "
        f"{fmt(r['cpu_at_fixed_rates']['rates'][-1]['rate'])} msg/s** | "
        f"**{fmt(ratios['hub_cpu_per_ack_over_baseline_lowest_rate'], '.2f')} / {fmt(ratios['hub_cpu_per_ack_over_baseline_highest_rate'], '.2f')}** |",
    ] if "hub_cpu_per_ack_over_baseline_lowest_rate" in ratios else []) + [
        f"| **Two nodes ÷ one node, sustained** | **{fmt(ratios['two_nodes_sustained_over_one_node'], '.2f')}** |",
        f"| **Cross-node delivery p99 ÷ one node** | **{fmt(ratios['cross_node_delivery_p99_over_one_node'], '.2f')}** |",
    ] + ([
        f"| **Two nodes' CPU per acked message ÷ one node's** | **{fmt(ratios['two_nodes_cpu_per_ack_over_one_node'], '.2f')}** |",
    ] if "two_nodes_cpu_per_ack_over_one_node" in ratios else []) + [
        f"| Server memory per idle socket | {fmt(ratios['bytes_per_idle_connection'])} bytes |",
        f"| Resident memory after {storm['accounts']} signups and logins, over idle | {fmt(storm['grown_bytes'] / 2**20, '.1f')} MiB |",
        f"| Server CPU per acked message (at half rate) | {fmt(ratios['cpu_us_per_acked_message'], '.1f')} µs |",
        f"| Exactness, every run | {'OK' if r['exact'] else 'FAILED'} |",
        "",
        "The hub's chat-mix steps:",
        "",
    ]
    if chat.get("step_summaries"):
        lines += [
            f"| offered msg/s | acked msg/s, median (range) | p99 ack, median (range) | passed ({trials} trials) |",
            "|---:|---:|---:|:---:|",
        ]
        for s in chat["step_summaries"]:
            p = s["p99_ack_ms"]
            lines.append(
                f"| {fmt(s['rate'])} | {spread(s['acked_per_sec'])} | "
                f"{p['median']:.1f} ms ({p['min']:.1f}–{p['max']:.1f}) | {'yes' if s['passed'] else 'no'} |"
            )
    else:
        lines += [
            "| offered msg/s | acked msg/s | p99 ack | p99 delivery | exact |",
            "|---:|---:|---:|---:|:---:|",
        ]
        for s in chat["steps"]:
            lines.append(
                f"| {fmt(s['rate'])} | {fmt(s['acked_per_sec'])} | {ms(s['ack_latency']['p99_ms'])} | "
                f"{ms(s['delivery_latency']['p99_ms'])} | {'yes' if s['exact'] else 'no'} |"
            )
    lines += cpu_tables(r)
    lines.append(END)
    return "\n".join(lines)


def cpu_tables(r):
    """The CPU at fixed rates, the fan-out compared on CPU, and the memory at each scenario's
    end, when the report has them."""
    lines = []
    fixed, fanout, rss = r.get("cpu_at_fixed_rates"), r.get("fanout_cpu"), r.get("server_rss_bytes_at_end")
    us = lambda s, spec=".1f": spread(s, spec) + " µs" if s else "n/a"
    if fixed:
        lines += [
            "",
            f"Server CPU per acked message at fixed rates ({fixed['layout']}; median of {fixed['trials']} trials, range):",
            "",
        ]
        # Reports before the baseline ran 2-member chats have no column for it.
        base = any("baseline_cpu_us_per_acked" in f for f in fixed["rates"])
        lines += [
            "| offered msg/s | acked msg/s | p99 ack | server CPU per acked message | "
            + ("baseline's, same chats and rate | hub ÷ baseline | " if base else "")
            + "harness CPU per frame | server memory at the end |",
            "|---:|---:|---:|---:|" + ("---:|---:|" if base else "") + "---:|---:|",
        ]
        for f in fixed["rates"]:
            p = f["p99_ack_ms"]
            mib = f.get("server_rss_bytes")
            lines.append(
                f"| {fmt(f['rate'])} | {spread(f['acked_per_sec'])} | {p['median']:.1f} ms ({p['min']:.1f}–{p['max']:.1f}) | "
                f"{us(f['server_cpu_us_per_acked'])} | "
                + (f"{us(f.get('baseline_cpu_us_per_acked'))} | {fmt(f.get('hub_over_baseline'), '.2f')} | " if base else "")
                + f"{us(f['harness_cpu_us_per_frame'], '.2f')} | "
                f"{fmt(mib['median'] / 2**20, '.1f') + ' MiB' if mib else 'n/a'} |"
            )
    if fanout:
        lines += [
            "",
            f"Fan-out compared on CPU ({fanout['layout']}; median of {fanout['trials']} trials, range):",
            "",
            "| offered msg/s | deliveries/s, hub | hub CPU per delivery | baseline CPU per delivery | hub ÷ baseline | harness CPU per frame (hub run) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for f in fanout["rates"]:
            lines.append(
                f"| {fmt(f['rate'])} | {spread(f['hub_deliveries_per_sec']) if f['hub_deliveries_per_sec'] else 'n/a'} | "
                f"{us(f['hub_cpu_us_per_delivery'], '.2f')} | {us(f['baseline_cpu_us_per_delivery'], '.2f')} | "
                f"{fmt(f['hub_over_baseline'], '.2f')} | {us(f['harness_cpu_us_per_frame']['hub'], '.2f')} |"
            )
    if rss:
        names = ", ".join(f"{k.replace('_', ' ')} {fmt(v / 2**20, '.0f')} MiB" for k, v in rss.items() if v is not None)
        lines += ["", f"Server resident memory at the end of each scenario: {names}."]
    return lines


def main(args):
    check = args[:1] == ["--check"]
    report_path, readme_path = args[1:3] if check else args[0:2]
    readme = open(readme_path).read()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    text = readme[:start] + render(json.load(open(report_path))) + readme[end:]
    return write_or_check(readme_path, text, check, f"scripts/lib/render_perf.py {report_path}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Prints how the headline figures of one `scripts/bench` report changed from an earlier one.

usage: bench_compare.py OLD.json NEW.json"""

import json
import sys

# (label, path into the report, whether a larger value is better)
FIGURES = [
    ("pgbench stored msgs/s", ("pgbench", "tps"), True),
    ("hub sustained acked msgs/s", ("hub_chat", "sustained_acked_per_sec"), True),
    ("hub p99 send->ack at half rate (ms)", ("hub_chat_at_half", "ack_latency", "p99_ms"), False),
    ("hub p99 send->delivery at half rate (ms)", ("hub_chat_at_half", "delivery_latency", "p99_ms"), False),
    ("room deliveries/s (hub)", ("room", "hub_deliveries_per_sec"), True),
    ("two nodes sustained acked msgs/s", ("two_nodes", "two_nodes_sustained_acked_per_sec"), True),
    ("ratio hub / pgbench", ("ratios", "hub_acked_per_sec_over_pgbench_tps"), True),
    ("ratio hub / baseline deliveries", ("ratios", "hub_deliveries_over_baseline_deliveries"), True),
    ("ratio two nodes / one node", ("ratios", "two_nodes_sustained_over_one_node"), True),
    ("server CPU us per acked message", ("ratios", "cpu_us_per_acked_message"), False),
    ("ratio two nodes' CPU per ack / one node", ("ratios", "two_nodes_cpu_per_ack_over_one_node"), False),
    ("ratio hub CPU per ack / baseline, lowest rate", ("ratios", "hub_cpu_per_ack_over_baseline_lowest_rate"), False),
    ("ratio hub CPU per ack / baseline, highest rate", ("ratios", "hub_cpu_per_ack_over_baseline_highest_rate"), False),
    ("server bytes per idle socket", ("ratios", "bytes_per_idle_connection"), False),
]


def get(report, path):
    for key in path:
        if not isinstance(report, dict) or key not in report:
            return None
        report = report[key]
    # A figure measured in trials is a median with its range.
    if isinstance(report, dict) and "median" in report:
        return report["median"]
    return report


def main(old_path, new_path):
    old, new = json.load(open(old_path)), json.load(open(new_path))
    print(f"change from {old_path} ({old.get('commit')}, {old.get('date')}) to {new_path} ({new.get('commit')}, {new.get('date')})")
    width = max(len(f[0]) for f in FIGURES)
    for label, path, larger_better in FIGURES:
        a, b = get(old, path), get(new, path)
        if a is None or b is None:
            change = "n/a"
        elif a == 0:
            change = "(was 0)"
        else:
            pct = (b - a) / abs(a) * 100
            better = (pct > 0) == larger_better
            change = f"{pct:+.1f}% ({'better' if better else 'worse'})" if abs(pct) >= 0.05 else "same"
        show = lambda v: "n/a" if v is None else f"{v:,.2f}"
        print(f"{label:<{width}}  {show(a):>14} -> {show(b):>14}  {change}")
    if old.get("mode") != new.get("mode"):
        print(f"note: the modes differ ({old.get('mode')} vs {new.get('mode')}): the figures are not comparable")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))

"""Writes grafana/dashboards/xfchat.json, the XFChat dashboard, from the panel list below; with
--check, fails when the file differs from what this writes. Panels whose ids alerts link to
(`dashboard_url` in prometheus/alerts.yml) keep those ids: 2, 4, 5, 12, 14, 16, 20.

Read top to bottom: is the service meeting its objectives; is it us or the database; traffic;
saturation and process, per instance (never summed across nodes)."""

import json
import sys

from generated import write_or_check

OUT = "grafana/dashboards/xfchat.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
INST = 'instance=~"$instance"'
RI = "$__rate_interval"


def rate(metric, by=None, sel=INST):
    inner = f"rate({metric}{{{sel}}}[{RI}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q, metric, by="le", sel=INST):
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{sel}}}[{RI}])))"


def target(expr, legend, ref, **extra):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref} | extra


UP_DOWN = [
    {"type": "value", "options": {"0": {"text": "DOWN", "color": "red", "index": 0}, "1": {"text": "UP", "color": "green", "index": 1}}}
]


def panel(pid, title, description, targets, unit, *, kind="timeseries", w=8, thresholds=None, mappings=None, options=None):
    steps = [{"color": "green", "value": None}] + [{"color": "red", "value": t} for t in thresholds or []]
    defaults = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if mappings:
        defaults["mappings"] = mappings
    if kind == "timeseries":
        defaults["custom"] = {"thresholdsStyle": {"mode": "line" if thresholds else "off"}}
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": 7, "w": w},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
        "targets": [target(e, l, chr(65 + i)) for i, (e, l) in enumerate(targets)],
    }


def stat(pid, title, description, targets, unit, **kw):
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background", "textMode": "value_and_name"}
    return panel(pid, title, description, targets, unit, kind="stat", options=options, **kw)


def row(pid, title):
    return {"id": pid, "type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24}, "panels": []}


PANELS = [
    row(1, "Service level: are users served?"),
    panel(2, "SLI: good sends and HTTP requests",
          "Share of good events, by objective (slo label): sends acked within the threshold, HTTP requests not answered 5xx. Line: the objective (prometheus/alerts.yml).",
          [("1 - xfchat:slo_errors:ratio_rate5m", "{{slo}} (5m)"), ("1 - xfchat:slo_errors:ratio_rate1h", "{{slo}} (1h)"), ("xfchat:slo_objective:ratio", "{{slo}} objective")],
          "percentunit", w=8),
    stat(3, "Error budget left (30 days)",
         "1 - (the average hourly error ratio over 30 days / the error budget). Below 0: the objective is missed for this month.",
         [("1 - avg_over_time(xfchat:slo_errors:ratio_rate1h[30d]) / on(slo) xfchat:slo_error_budget:ratio", "{{slo}}")],
         "percentunit", w=4, thresholds=[]),
    panel(6, "Burn rate",
          "How fast the error budget is spent: 1 spends it in exactly 30 days. XFChatErrorBudgetBurnFast pages above 14.4 (1h and 5m) or 6 (6h and 30m).",
          [("xfchat:slo_errors:ratio_rate1h / on(slo) xfchat:slo_error_budget:ratio", "{{slo}} (1h)"),
           ("xfchat:slo_errors:ratio_rate5m / on(slo) xfchat:slo_error_budget:ratio", "{{slo}} (5m)")],
          "short", w=6, thresholds=[6, 14.4]),
    stat(4, "Scrape up", "Whether Prometheus scrapes each instance (XFChatDown).",
         [(f'up{{job="xfchat",{INST}}}', "{{instance}}")], "none", w=3, mappings=UP_DOWN),
    stat(5, "Database up", "Whether each instance's probe reaches PostgreSQL (XFChatDatabaseDown).",
         [(f"xfchat_db_up{{{INST}}}", "{{instance}}")], "none", w=3, mappings=UP_DOWN),
    row(7, "Database or us"),
    panel(9, "Send to ack",
          "Receipt of a send to its ack, over all instances. Line: the send objective's threshold (0.25 s).",
          [(quantile(0.5, "xfchat_ack_latency_seconds"), "p50"), (quantile(0.99, "xfchat_ack_latency_seconds"), "p99")],
          "s", w=6, thresholds=[0.25]),
    panel(10, "Group commit time p99",
          "One transaction storing a batch of sends, per instance. Rising with ack latency: the database is slow.",
          [(quantile(0.99, "xfchat_persist_commit_seconds", "instance, le"), "{{instance}}")], "s", w=6),
    panel(11, "Permit wait p99",
          "Time a request waits for a pool guard permit, per instance. Rising while commit time is flat: this node is saturated, not the database.",
          [(quantile(0.99, "xfchat_db_permit_wait_seconds", "instance, le"), "{{instance}}")], "s", w=4),
    panel(13, "Pool acquire wait p99",
          "Time to get a database connection once a permit is held, per instance.",
          [(quantile(0.99, "xfchat_db_pool_acquire_seconds", "instance, le"), "{{instance}}")], "s", w=4),
    panel(15, "Database errors by kind",
          "Errors from PostgreSQL: timeout, connection, query, data. Connection errors with the database up panel red: the database is down.",
          [(rate("xfchat_db_errors_total", "kind"), "{{kind}}")], "cps", w=4),
    row(17, "Traffic"),
    panel(18, "Messages stored", "Messages committed per second.", [(rate("xfchat_messages_persisted_total"), "stored")], "cps", w=6),
    panel(19, "Deliveries", "Messages handed to sockets per second.", [(rate("xfchat_deliveries_total"), "delivered")], "cps", w=6),
    panel(21, "Open sockets", "WebSocket connections per instance, and connects per second.",
          [(f"sum by (instance) (xfchat_ws_connections{{{INST}}})", "{{instance}}"), (rate("xfchat_ws_connects_total"), "connects/s")], "short", w=6),
    panel(22, "HTTP requests by route", "Requests per second by route template.", [(rate("xfchat_http_requests_total", "route"), "{{route}}")], "reqps", w=6),
    panel(23, "Sends refused by cause and code",
          "Sends answered with an error: cause server (counts against the objective) or client (not counted).",
          [(rate("xfchat_ws_sends_refused_total", "cause, code"), "{{cause}} {{code}}")], "cps", w=8),
    panel(24, "Error frames by code", "Every error frame a socket got, by code.", [(rate("xfchat_ws_error_frames_total", "code"), "{{code}}")], "cps", w=8),
    panel(25, "Persist failures by code", "Sends whose group commit failed (overloaded or persist_failed); clients resend them.",
          [(rate("xfchat_persist_failures_total", "code"), "{{code}}")], "cps", w=8),
    row(26, "Saturation, per instance"),
    panel(12, "Guard permits in use",
          "Share of the pool guard's permits in use, per instance. Line: XFChatPoolSaturated (0.9 for 5 minutes).",
          [(f'sum by (instance) (xfchat_db_permits{{{INST},state="in_use"}}) / sum by (instance) (xfchat_db_permits_max{{{INST}}})', "{{instance}}")],
          "percentunit", w=6, thresholds=[0.9]),
    panel(14, "Permit timeouts", "Requests answered overloaded for want of a permit. Line: XFChatPermitTimeouts (1/s for 10 minutes).",
          [(rate("xfchat_db_permit_timeouts_total", "instance"), "{{instance}}")], "cps", w=6, thresholds=[1]),
    panel(28, "Pool connections in use", "Database connections in use, per instance; the pool's maximum is XFCHAT_DB_MAX_CONNECTIONS.",
          [(f'sum by (instance) (xfchat_db_pool_connections{{{INST},state="in_use"}})', "{{instance}}")], "short", w=6),
    panel(29, "Outbound queue depth p99", "Frames waiting in a socket's queue when one is written, per instance.",
          [(quantile(0.99, "xfchat_ws_outbound_queue_frames", "instance, le"), "{{instance}}")], "short", w=6),
    panel(20, "Disconnects by reason", "Sockets closed per second by reason. Line: XFChatStalledSockets (stalled above 1/s).",
          [(rate("xfchat_ws_disconnects_total", "reason"), "{{reason}}")], "cps", w=8, thresholds=[1]),
    stat(16, "Bus up", "Whether each instance's bus listener hears its own heartbeat (XFChatBusDown); absent with XFCHAT_BUS=off.",
         [(f"xfchat_bus_up{{{INST}}}", "{{instance}}")], "none", w=4, mappings=UP_DOWN),
    panel(30, "Bus repairs", "Messages found by a position check that no notice announced, per instance (0 outside reconnects).",
          [(rate("xfchat_bus_repaired_messages_total", "instance"), "{{instance}}")], "cps", w=6),
    panel(31, "Rate limited and refused upgrades", "Frames refused by the per-user rate, and upgrades refused, per second.",
          [(rate("xfchat_ws_rate_limited_total", "kind"), "{{kind}}"), (rate("xfchat_ws_upgrades_refused_total", "reason"), "upgrade {{reason}}")], "cps", w=6),
    panel(37, "Webhook backlog", "Age of the oldest webhook event waiting in the outbox (all nodes share it), and how many wait. Line: XFChatWebhookBacklog (15 minutes).",
          [(f"max(xfchat_webhook_oldest_event_age_seconds{{{INST}}})", "oldest event"), (f"max(xfchat_webhook_backlog_events{{{INST}}})", "events waiting")], "s", w=6, thresholds=[900]),
    panel(38, "Webhook requests", "Webhook requests per second by outcome (failed: an error answer, a timeout, no connection), and events taken.",
          [(rate("xfchat_webhook_requests_total", "outcome"), "{{outcome}}"), (rate("xfchat_webhook_events_delivered_total"), "events delivered")], "reqps", w=6),
    panel(39, "Commit slots", "Commits each instance may have in flight at once: XFCHAT_PERSIST_WORKERS split over the nodes it hears. "
          "Lower than expected with acks slow: a node that left is still counted for a minute (runbook, slow acks).",
          [(f"sum by (instance) (xfchat_persist_commit_slots{{{INST}}})", "{{instance}}")], "short", w=6),
    row(32, "Process, per instance"),
    panel(33, "CPU", "CPU cores used per instance; compare with the machine's core count.",
          [(rate("xfchat_process_cpu_seconds_total", "instance"), "{{instance}}")], "short", w=6),
    panel(34, "Resident memory", "Resident memory per instance.", [(f"sum by (instance) (xfchat_process_resident_memory_bytes{{{INST}}})", "{{instance}}")], "bytes", w=6),
    panel(35, "File descriptors", "Open file descriptors per instance, against its limit.",
          [(f"sum by (instance) (xfchat_process_open_fds{{{INST}}}) / sum by (instance) (xfchat_process_max_fds{{{INST}}})", "{{instance}}")], "percentunit", w=6),
    stat(36, "Build", "The version and commit each instance runs.",
         [(f"xfchat_build_info{{{INST}}}", "{{instance}} {{version}} {{git_sha}}")], "none", w=6),
]


def layout(panels):
    x = y = height = 0
    for p in panels:
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > 24:
            x, y = 0, y + height
            height = 0
        p["gridPos"] |= {"x": x, "y": y}
        x, height = x + w, max(height, h)
        if p["type"] == "row":
            x, y, height = 0, y + 1, 0
    return panels


def dashboard():
    budget = next(p for p in PANELS if p["id"] == 3)
    budget["fieldConfig"]["defaults"]["thresholds"]["steps"] = [{"color": "red", "value": None}, {"color": "green", "value": 0}]
    build = PANELS[-1]
    build["options"]["textMode"] = "name"
    build["options"]["colorMode"] = "none"
    return {
        "title": "XFChat overview",
        "uid": "xfchat",
        "schemaVersion": 39,
        "version": 2,
        "editable": True,
        "tags": ["xfchat"],
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "description": "XFChat top to bottom: service level, database or us, traffic, saturation and process per instance. Runbook: docs/runbook.md. Generated by scripts/lib/dashboard.py.",
        "annotations": {
            "list": [
                {
                    "name": "Restarts and deploys",
                    "datasource": DS,
                    "enable": True,
                    "iconColor": "blue",
                    "expr": 'changes(xfchat_process_start_time_seconds{instance=~"$instance"}[2m]) > 0',
                    "step": "1m",
                    "titleFormat": "{{instance}} restarted",
                    "textFormat": "a new process; a version change shows in the Build panel",
                }
            ]
        },
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source", "current": {}, "hide": 0},
                {
                    "name": "instance", "type": "query", "label": "Instance", "datasource": DS,
                    "query": {"query": "label_values(xfchat_build_info, instance)", "refId": "instance"},
                    "definition": "label_values(xfchat_build_info, instance)", "includeAll": True, "multi": True,
                    "allValue": ".*", "refresh": 2, "current": {"text": "All", "value": "$__all"}, "hide": 0, "sort": 1,
                },
            ]
        },
        "panels": layout(PANELS),
    }


def main(args):
    text = json.dumps(dashboard(), indent=2) + "\n"
    return write_or_check(OUT, text, args[:1] == ["--check"], "scripts/lib/dashboard.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

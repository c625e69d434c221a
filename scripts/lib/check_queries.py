"""Evaluates every PromQL expression of the dashboard and the alert rules against a running
Prometheus, and fails when any returns no series (a misspelt metric or label, or a series the
traffic never produced). Alert expressions are `<measure> <op> <threshold>`: the measure alone is
evaluated, since a healthy system does not fire the alert."""

import json
import re
import sys
import urllib.parse
import urllib.request

THRESHOLD = re.compile(r"\s(>|<|>=|<=|==|!=)\s*[0-9.e+-]+\s*$")


def dashboard_queries(path):
    dash = json.load(open(path))
    for panel in dash["panels"]:
        if panel.get("type") == "row":
            continue
        for field in ("description", "datasource"):
            if not panel.get(field):
                yield ("problem", f"panel {panel['title']!r} has no {field}")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            yield ("problem", f"panel {panel['title']!r} has no unit")
        for target in panel["targets"]:
            yield (f"panel {panel['title']!r}", target["expr"])


def alert_queries(path):
    # The rules file is simple YAML; the expressions are single-line `expr:` values.
    for line in open(path):
        match = re.match(r"\s*expr:\s*(.+)$", line)
        if match:
            expr = match.group(1).strip()
            measure = THRESHOLD.sub("", expr)
            if measure == expr:
                yield ("problem", f"alert expression without a trailing threshold: {expr}")
            yield ("alert rule", measure)


def runbook_gaps(rules, runbook="docs/runbook.md"):
    """Alert rules whose runbook_url points at no section of the runbook."""
    anchors = {h.strip().lower() for h in re.findall(r"^## (.+)$", open(runbook).read(), re.M)}
    for anchor in re.findall(r'runbook_url: "docs/runbook.md#([\w-]+)"', open(rules).read()):
        if anchor not in anchors:
            yield anchor


def main(prometheus, dashboard, rules):
    failures = 0
    for anchor in runbook_gaps(rules):
        print(f"FAIL  no runbook section for #{anchor}")
        failures += 1
    checked = 0
    for where, expr in list(dashboard_queries(dashboard)) + list(alert_queries(rules)):
        if where == "problem":
            print(f"FAIL  {expr}")
            failures += 1
            continue
        query = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        answer = json.load(urllib.request.urlopen(url, timeout=10))
        checked += 1
        if answer.get("status") != "success":
            print(f"FAIL  {where}: {query}: {answer}")
            failures += 1
        elif not answer["data"]["result"]:
            print(f"FAIL  {where}: no series for {query}")
            failures += 1
        else:
            print(f"ok    {where}: {len(answer['data']['result'])} series for {query}")
    print(f"{checked} expressions evaluated, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

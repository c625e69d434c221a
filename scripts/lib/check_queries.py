"""Checks the dashboard and the rules against a running Prometheus that scrapes a server which
served traffic: every dashboard expression returns series; every recording rule's series
exists; every series an alert reads exists (a misspelt metric or label, or a series the traffic
never made, would leave the alert silent forever). Also checks the links: each alert has an
absolute runbook link to a section that exists in docs/runbook.md, and a dashboard link to a
panel that exists."""

import json
import re
import sys
import urllib.parse
import urllib.request

import yaml

NAME = re.compile(r"\b(up|xfchat[a-zA-Z0-9_:]*)\b")


def dashboard_queries(dash):
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


def rules_of(path):
    return [rule for group in yaml.safe_load(open(path))["groups"] for rule in group["rules"]]


def rule_queries(rules):
    for rule in rules:
        if "record" in rule:
            yield (f"recorded {rule['record']}", rule["record"])
            continue
        # The settings recorded above are read through their own names.
        for name in sorted(set(NAME.findall(re.sub(r'"[^"]*"', '', rule["expr"])))):
            yield (f"alert {rule['alert']} reads", name)


def link_problems(rules, dash, runbook="docs/runbook.md"):
    links = next(r for r in rules if r.get("record") == "xfchat:links:info")["labels"]
    if not re.match(r"https?://", links["runbook"]) or not re.match(r"https?://", links["dashboard"]):
        yield "xfchat:links:info: the runbook and dashboard links must be absolute URLs"
    anchors = {h.strip().lower() for h in re.findall(r"^## (.+)$", open(runbook).read(), re.M)}
    panels = {p["id"] for p in dash["panels"]}
    for rule in (r for r in rules if "alert" in r):
        name, notes = rule["alert"], rule.get("annotations", {})
        for field in ("for",):
            if field not in rule:
                yield f"{name}: no {field}"
        if "severity" not in rule.get("labels", {}):
            yield f"{name}: no severity"
        runbook_url = notes.get("runbook_url", "")
        match = re.fullmatch(r'\{\{ with query "xfchat:links:info" \}\}.*\.Labels\.runbook .*\{\{ end \}\}#([\w-]+)', runbook_url)
        if not match:
            yield f"{name}: runbook_url is not built from xfchat:links:info's runbook link"
        elif match.group(1) not in anchors:
            yield f"{name}: no section #{match.group(1)} in {runbook}"
        panel = re.search(r"\.Labels\.dashboard .*\?viewPanel=(\d+)$", notes.get("dashboard_url", ""))
        if not panel or int(panel.group(1)) not in panels:
            yield f"{name}: dashboard_url names no panel of the dashboard"


def main(prometheus, dashboard, rules_path):
    dash = json.load(open(dashboard))
    rules = rules_of(rules_path)
    failures = 0
    for problem in link_problems(rules, dash):
        print(f"FAIL  {problem}")
        failures += 1
    checked = 0
    for where, expr in list(dashboard_queries(dash)) + list(rule_queries(rules)):
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

"""The scripted incident's verdict, while the database is down: waits (at most `timeout` seconds)
until Prometheus's alerts API shows XFChatDatabaseDown and the sends burn-rate page firing, and
Alertmanager's API shows that page held back by XFChatDatabaseDown; prints the burn query and its
value. Exits non-zero when that does not happen in time.

usage: incident.py PROMETHEUS_URL ALERTMANAGER_URL TIMEOUT_SECONDS"""

import json
import sys
import time
import urllib.parse
import urllib.request

PAGE = "XFChatErrorBudgetBurnFast"
CAUSE = "XFChatDatabaseDown"
BURN = 'xfchat:slo_errors:ratio_rate5m{slo="sends"} / on(slo) xfchat:slo_error_budget:ratio'


def get(url):
    return json.load(urllib.request.urlopen(url, timeout=5))


def firing(prometheus):
    alerts = get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("slo")) for a in alerts if a["state"] == "firing"}


def held_back(alertmanager):
    """Whether the sends page is in Alertmanager, suppressed by an inhibition."""
    query = urllib.parse.urlencode({"filter": [f'alertname="{PAGE}"', 'slo="sends"']}, doseq=True)
    for alert in get(f"{alertmanager}/api/v2/alerts?{query}"):
        status = alert["status"]
        if status["state"] == "suppressed" and status["inhibitedBy"]:
            return True
    return False


def main(prometheus, alertmanager, timeout):
    deadline = time.monotonic() + float(timeout)
    seen = set()
    while time.monotonic() < deadline:
        try:
            seen = firing(prometheus)
            if (CAUSE, None) in seen and (PAGE, "sends") in seen and held_back(alertmanager):
                value = get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": BURN}))
                burn = value["data"]["result"][0]["value"][1]
                print(f"incident: {PAGE}{{slo=\"sends\"}} firing; burn rate {BURN} = {float(burn):.1f}")
                print(f"incident: {CAUSE} firing, and Alertmanager holds {PAGE} back (inhibited)")
                return 0
        except (OSError, KeyError, IndexError, ValueError) as e:
            print(f"incident: still waiting ({e})")
        time.sleep(1)
    print(f"FAIL  incident: within {timeout}s, firing: {sorted(seen)}; expected {CAUSE} and {PAGE} "
          f"(slo=sends), the page inhibited in Alertmanager")
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

"""Resident memory of a server before and after a storm of signups and then logins.

usage: password_storm.py BASE_URL PID ACCOUNTS OUT.json

Each signup and login hashes a password with argon2id (19 MiB of working memory each); the
server must hand that memory back to its pool of hashing slots, not to the allocator's arenas.
"""
import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def resident_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def post(base, path, body):
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status
    except urllib.error.HTTPError as e:
        return e.code


def main(base, pid, accounts, out):
    pid, accounts = int(pid), int(accounts)
    idle = resident_bytes(pid)
    started = time.monotonic()
    figures = {"accounts": accounts, "idle_bytes": idle}
    with ThreadPoolExecutor(max_workers=16) as pool:
        for path in ("/api/auth/signup", "/api/auth/login"):
            body = lambda i: {"username": f"storm{i}", "password": "correct horse battery"}
            statuses = list(pool.map(lambda i: post(base, path, body(i)), range(accounts)))
            ok = sum(1 for s in statuses if s in (200, 201))
            if ok != accounts:
                print(f"{path}: {accounts - ok} of {accounts} failed", file=sys.stderr)
                return 1
            figures[path.rsplit("/", 1)[1] + "_after_bytes"] = resident_bytes(pid)
    figures["seconds"] = round(time.monotonic() - started, 2)
    figures["grown_bytes"] = figures["login_after_bytes"] - idle
    json.dump(figures, open(out, "w"), indent=2)
    mib = 1024 * 1024
    print(
        f"password storm: {accounts} signups and {accounts} logins in {figures['seconds']} s; "
        f"resident {idle / mib:.1f} MiB idle, {figures['login_after_bytes'] / mib:.1f} MiB after "
        f"(+{figures['grown_bytes'] / mib:.1f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))

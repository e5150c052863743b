"""Run the locust scenario headless, against a given gateway or a private `herald serve`.

    python -m loadtest.locust_run [--time 30s] [--users 50] [--spawn-rate 10]
                                  [--host URL] [--users-kinds ws,http,queue] [--csv PREFIX]

Without `--host` it starts its own `herald serve` (memory engine, temp HERALD_DATA_DIR, a
free loopback port, dev mode unless HERALD_TOKEN is set) and stops it by PID afterwards,
whatever happens. Locust runs as a subprocess (`python -m locust`), headless, and prints its
summary; this script then reads locust's CSV stats and prints a short report.

Without `--users-kinds` every kind runs, except `queue` when the gateway answers 404 on
`GET /v1/queues` (no queue API): that is said on stdout and the queue users are left out.
An explicit `--users-kinds` is taken as is.

Exit status: 0 when locust exited 0, made at least one request, reported no failure, and
every pipeline that ran end to end (ws+http: `WS deliver`; queue: `QUEUE job`) delivered
something; 1 otherwise; 2 when the gateway could not be started or reached.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loadtest.procs import AUTH_VARS, ROOT, HeraldServer, stop_pid

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
KINDS = ("ws", "http", "queue")
# User classes per kind, as in the locustfile (a kind runs end to end only if all spawn).
CLASSES = {"ws": 1, "http": 1, "queue": 2}
STARTUP_TIMEOUT = 30.0
SHUTDOWN_SLACK = 60.0  # seconds allowed beyond --time for ramp-up, stop and report


def parse_time(value: str) -> float:
    """Locust's time spans: `30`, `30s`, `2m`, `1h30m` -> seconds."""
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.findall(r"(\d+)\s*([hms])", value)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", value):
        raise argparse.ArgumentTypeError(f"bad time span {value!r} (e.g. 30s, 2m, 1h30m)")
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


def parse_kinds(value: str) -> list[str]:
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise argparse.ArgumentTypeError(f"kinds must be a comma list of {', '.join(KINDS)}")
    return kinds


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Status of a GET (with HERALD_TOKEN if set), or None when nothing answered."""
    req = urllib.request.Request(url)
    token = os.environ.get("HERALD_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


class ServerError(RuntimeError):
    pass


@contextlib.contextmanager
def own_server() -> Iterator[str]:
    """A private `herald serve` on a free loopback port; yields its base URL."""
    # No token to offer: run the private server in dev mode.
    unset = () if os.environ.get("HERALD_TOKEN") else AUTH_VARS
    env = {
        "HERALD_ENGINE": "memory",
        "HERALD_LOG_LEVEL": os.environ.get("HERALD_LOG_LEVEL", "warning"),
        "HERALD_DRAIN_TIMEOUT": "2",
    }
    server = HeraldServer(
        env=env, unset=unset, data_dir=Path(tempfile.mkdtemp(prefix="herald-locust-"))
    )
    try:
        try:
            server.start(STARTUP_TIMEOUT)
        except (RuntimeError, TimeoutError) as exc:
            print(server.output()[-4000:], file=sys.stderr)
            raise ServerError(str(exc)) from exc
        print(f"locust_run: started herald serve (pid {server.pid}) at {server.http}", flush=True)
        yield server.http
    finally:
        if server.proc is not None:
            server.stop()
            print(f"locust_run: stopped herald serve (pid {server.pid})", flush=True)
        shutil.rmtree(server.data_dir, ignore_errors=True)


def read_stats(prefix: str) -> list[dict[str, str]]:
    path = Path(prefix + "_stats.csv")
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def as_int(value: str | None) -> int:
    try:
        return int(float(value or 0))
    except ValueError:
        return 0


def row(rows: list[dict[str, str]], type_: str, name: str) -> dict[str, str] | None:
    return next((r for r in rows if r.get("Type") == type_ and r.get("Name") == name), None)


def report(rows: list[dict[str, str]]) -> None:
    cols = (
        "Request Count",
        "Failure Count",
        "Requests/s",
        "50%",
        "95%",
        "99%",
        "Max Response Time",
    )
    print("\nlocust_run summary (response times in ms; WS deliver / QUEUE job = end to end):")
    print(f"  {'type':6} {'name':28} " + " ".join(f"{c.split()[0]:>9}" for c in cols))
    for r in rows:
        label = r.get("Name", "")[:28]
        cells = []
        for c in cols:
            v = r.get(c, "")
            with contextlib.suppress(ValueError):
                v = f"{float(v):.1f}" if c == "Requests/s" else str(round(float(v)))
            cells.append(f"{v:>9}")
        print(f"  {r.get('Type', ''):6} {label:28} " + " ".join(cells))


def verdict(rows: list[dict[str, str]], kinds: list[str], users: int, rc: int) -> list[str]:
    """Reasons the run failed (empty when it passed)."""
    problems = []
    if rc != 0:
        problems.append(f"locust exited with {rc}")
    total = row(rows, "", "Aggregated")
    if total is None:
        return [*problems, "no locust stats (CSV missing or empty)"]
    if as_int(total.get("Request Count")) == 0:
        problems.append("locust made no request")
    if as_int(total.get("Failure Count")):
        problems.append(f"{as_int(total.get('Failure Count'))} failure(s)")
    all_spawned = users >= sum(CLASSES[k] for k in kinds)
    checks = {("ws", "http"): ("WS", "deliver"), ("queue",): ("QUEUE", "job")}
    for needed, (type_, name) in checks.items():
        if all_spawned and all(k in kinds for k in needed):
            r = row(rows, type_, name)
            if r is None or as_int(r.get("Request Count")) == 0:
                problems.append(f"no {type_} {name} happened")
    return problems


def choose_kinds(host: str, requested: list[str] | None) -> list[str]:
    if requested is not None:
        return requested
    kinds = list(KINDS)
    status = http_status(host.rstrip("/") + "/v1/queues")
    if status is None:
        raise ServerError(f"nothing answers at {host}")
    if status == 404:
        print("locust_run: GET /v1/queues -> 404 (no queue API): leaving queue users out")
        kinds.remove("queue")
    return kinds


def run_locust(args: argparse.Namespace, host: str, kinds: list[str], prefix: str) -> int:
    cmd = [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless",
        "-u", str(args.users),
        "-r", str(args.spawn_rate),
        "-t", args.time,
        "--host", host,
        "--csv", prefix,
        "--stop-timeout", "2",
    ]  # fmt: skip
    if not args.live_stats:
        cmd.append("--only-summary")
    env = {**os.environ, "HERALD_LOCUST_USERS": ",".join(kinds)}
    print(f"locust_run: {' '.join(cmd[1:])}  (HERALD_LOCUST_USERS={env['HERALD_LOCUST_USERS']})")
    sys.stdout.flush()
    limit = parse_time(args.time) + SHUTDOWN_SLACK
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.STDOUT)  # one stream
    try:
        return proc.wait(limit)
    except subprocess.TimeoutExpired:
        print(f"locust_run: locust still running after {limit:.0f}s; stopping it", file=sys.stderr)
        return -1
    finally:
        stop_pid(proc, timeout=10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.locust_run", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--time", default="30s", help="run time, locust syntax (30s, 2m)")
    p.add_argument("--users", type=int, default=50, help="concurrent users (default 50)")
    p.add_argument("--spawn-rate", type=float, default=10, help="users started per second")
    p.add_argument("--host", help="gateway base URL; default: start a private herald serve")
    p.add_argument("--users-kinds", type=parse_kinds, help="ws,http,queue (default: all)")
    p.add_argument("--csv", help="keep locust's CSV files under this prefix")
    p.add_argument("--live-stats", action="store_true", help="print locust's periodic stats")
    args = p.parse_args(argv)
    parse_time(args.time)  # fail early on a bad span
    if args.users < 1 or args.spawn_rate <= 0:
        p.error("--users and --spawn-rate must be positive")

    # SIGTERM -> SystemExit, so that the finally blocks stop the private server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        try:
            host = args.host or stack.enter_context(own_server())
            kinds = choose_kinds(host, args.users_kinds)
        except ServerError as exc:
            print(f"locust_run: {exc}", file=sys.stderr)
            return 2
        if args.csv:
            prefix = args.csv
            Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        else:
            prefix = str(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "locust")
        rc = run_locust(args, host, kinds, prefix)
        rows = read_stats(prefix)
        report(rows)
        problems = verdict(rows, kinds, args.users, rc)
        info: dict[str, Any] = {"kinds": kinds, "passed": not problems, "problems": problems}
        print("locust_run: " + json.dumps(info), flush=True)
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

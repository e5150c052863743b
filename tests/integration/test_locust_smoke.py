"""Locust smoke: `python -m loadtest.locust_run` for ~10 s against its own `herald serve`.

Locust (gevent) runs in subprocesses, so pytest's `filterwarnings = error` does not reach it.
The run must pass by its own verdict, and locust's CSV must show real end-to-end traffic:
publishes, WebSocket deliveries within the possible bounds, no failure.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from procs import ROOT, stop_pid

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_TIMEOUT = 60.0  # locust_run itself bounds locust to --time + 60 s


def run_locust(tmp_path: Path) -> tuple[int, str, dict[tuple[str, str], dict[str, str]]]:
    prefix = tmp_path / "locust"
    cmd = [
        sys.executable, "-m", "loadtest.locust_run",
        "--time", "10s", "--users", "10", "--spawn-rate", "10", "--csv", str(prefix),
    ]  # fmt: skip
    with subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            # SIGTERM lets locust_run stop its own herald serve in its `finally`.
            stop_pid(proc, signal.SIGTERM, timeout=20)  # type: ignore[arg-type]  # text mode
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"locust_run did not finish within {RUN_TIMEOUT}s:\n{out[-5000:]}")
    stats_csv = Path(str(prefix) + "_stats.csv")
    assert stats_csv.exists(), f"no {stats_csv.name}:\n{out[-5000:]}"
    with stats_csv.open(newline="") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    return proc.returncode, out, rows


def count(rows: dict[tuple[str, str], dict[str, str]], type_: str, name: str) -> int:
    row = rows.get((type_, name))
    return int(row["Request Count"]) if row else 0


def test_locust_smoke_delivers_without_failures(tmp_path: Path) -> None:
    start = time.monotonic()
    rc, out, rows = run_locust(tmp_path)
    elapsed = time.monotonic() - start
    tail = out[-6000:]

    assert rc == 0, f"locust_run exited {rc}:\n{tail}"
    verdict = json.loads(
        next(line for line in out.splitlines() if line.startswith('locust_run: {"kinds"'))[12:]
    )
    assert verdict["passed"] and verdict["problems"] == [], tail

    total = rows[("", "Aggregated")]
    assert int(total["Failure Count"]) == 0, tail
    assert int(total["Request Count"]) > 0, tail

    # Every subscriber connected and subscribed once, with no reconnects.
    subscribers = count(rows, "WS", "subscribe")
    assert subscribers >= 1 and count(rows, "WS", "connect") == subscribers, tail

    # Publishes happened, and deliveries are within what they allow: each subscriber sees
    # each message at most once; about half the messages pass its gameId filter.
    published = count(rows, "POST", "/v1/publish") + 10 * count(rows, "POST", "/v1/publish/batch")
    delivered = count(rows, "WS", "deliver")
    assert published > 0, tail
    assert delivered > 0, f"no message was delivered:\n{tail}"
    assert delivered <= subscribers * published, tail
    assert delivered >= 0.2 * subscribers * published, f"too few deliveries:\n{tail}"

    # Publish-to-delivery latency on loopback: generous, but catches stalls.
    assert float(rows[("WS", "deliver")]["50%"]) < 2000, tail

    if "queue" in verdict["kinds"]:
        assert count(rows, "QUEUE", "job") > 0, tail

    # The private server was stopped; the whole run stayed bounded.
    assert "locust_run: stopped herald serve" in out, tail
    assert elapsed < 45, f"smoke took {elapsed:.1f}s"

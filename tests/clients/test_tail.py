"""`herald tail` on the Python client: it survives a gateway restart and resumes; with a
`--since` older than the history it says that resume could not recover."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from lab import API_KEY, Lab
from procs import ROOT, stop_pid

pytestmark = pytest.mark.integration


def tail(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "tail", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_subscriptions(http: str, n: int) -> None:
    deadline = time.monotonic() + 15
    while httpx.get(f"{http}/v1/stats", timeout=5).json()["subscriptions"] < n:
        assert time.monotonic() < deadline, "tail never subscribed"
        time.sleep(0.05)


def publish(http: str, topic: str, data: int, token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.post(f"{http}/v1/publish", json={"topic": topic, "data": data}, headers=headers)
    assert r.status_code == 202, r.text


def test_tail_survives_a_gateway_restart_and_resumes(lab: Lab) -> None:
    env = lab.setup("crash")
    http = env["http"][0]
    topic = f"tail.{uuid.uuid4().hex[:8]}"
    proc = tail(topic, "--count", "6", "--url", http)
    try:
        wait_subscriptions(http, 1)
        for i in range(3):
            publish(http, topic, i)
        lab.kill_restart(env["id"], 1.0)
        lab.wait_restarted(env["id"])
        for i in range(3, 6):
            publish(http, topic, i)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        stop_pid(proc)  # type: ignore[arg-type]
    assert proc.returncode == 0, stderr
    assert [json.loads(line)["data"] for line in stdout.splitlines()] == list(range(6))
    assert "# disconnected" in stderr
    assert "could not recover" not in stderr


def test_tail_since_older_than_history_prints_a_clear_line(lab: Lab) -> None:
    env = lab.setup("basic")
    http = env["http"][0]
    topic = f"small.{uuid.uuid4().hex[:8]}"
    for i in range(20):
        publish(http, topic, i, API_KEY)
    proc = tail(topic, "--since", "1", "--count", "1", "--url", http, "--token", API_KEY)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # printed once the server answered the resume
        publish(http, topic, 20, API_KEY)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        stop_pid(proc)  # type: ignore[arg-type]
    assert line.startswith("# resume could not recover"), line
    assert [json.loads(x)["data"] for x in stdout.splitlines()] == [20]

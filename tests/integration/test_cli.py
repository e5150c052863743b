"""`herald publish` and `herald tail` against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from procs import MS, ROOT, HeraldServer, stop_pid

pytestmark = pytest.mark.integration


def herald(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


def test_tail_prints_filtered_messages_published_by_cli(server: HeraldServer) -> None:
    with subprocess.Popen(
        herald(
            "tail", "game.>", "--filter", '{"gameId": ["1"]}', "--count", "2", "--url", server.http
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as tail:
        stdout = _run_tail(server, tail)
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [m["data"] for m in lines] == [{"home": 1}, "plain text"]
    assert all(m["attributes"]["gameId"] == "1" for m in lines)


def _run_tail(server: HeraldServer, tail: subprocess.Popen[str]) -> str:
    try:
        deadline = time.monotonic() + 15_000 * MS
        while httpx.get(server.http + "/v1/stats").json()["subscriptions"] < 1:
            assert time.monotonic() < deadline, "tail never subscribed"
            time.sleep(50 * MS)
        for gid, data in [("2", "skip"), ("1", '{"home": 1}'), ("1", "plain text")]:
            out = subprocess.run(
                herald(
                    "publish", "game.x.score", data, "--attr", f"gameId={gid}", "--url", server.http
                ),
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            assert "id" in json.loads(out.stdout)
        stdout, _ = tail.communicate(timeout=15)
        return stdout
    finally:
        stop_pid(tail)  # type: ignore[arg-type]


def test_publish_reports_errors_with_exit_code(server: HeraldServer) -> None:
    out = subprocess.run(
        herald("publish", "bad..topic", "1", "--url", server.http),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert json.loads(out.stderr)["error"]["code"] == "invalid_topic"

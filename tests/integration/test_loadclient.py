"""The benchmarks' load client against a real `herald serve`: what it counts is what
Herald delivered (the micro, peer and cross-pod figures all rest on these counters)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from loadtest.loadclient import LoadClient
from procs import PY, HeraldServer

pytestmark = pytest.mark.integration

SOCKETS = 20


@pytest.fixture
def client(server: HeraldServer) -> Iterator[LoadClient]:
    c = LoadClient(server.port, mark="topic")
    try:
        yield c
    finally:
        c.stop()


def wait_msgs(client: LoadClient, want: int, timeout: float = 10.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        st = client.call("stats")
        if st["msgs"] >= want or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def test_counts_every_delivered_message_and_frame(server: HeraldServer, client: LoadClient) -> None:
    res = client.connect(SOCKETS, topic="lc.a")
    assert (res["open"], res["failed"]) == (SOCKETS, 0)
    for i in range(5):
        r = httpx.post(f"{server.http}/v1/publish", json={"topic": "lc.a", "data": {"i": i}})
        assert r.status_code == 202
    st = wait_msgs(client, 5 * SOCKETS)
    assert (st["msgs"], st["frames"], st["subscribed"]) == (5 * SOCKETS, 5 * SOCKETS, SOCKETS)
    assert st["other"] == 0
    client.call("reset")
    assert client.call("stats")["msgs"] == 0


def test_paced_publisher_and_latency_probes(server: HeraldServer) -> None:
    subs = LoadClient(server.port)  # counts `"t0":` marks, as the peer benchmark does
    try:
        res = subs.connect(SOCKETS, topics=2, probe_every=2)
        assert res["open"] == SOCKETS
        out = subprocess.run(
            [PY, "-m", "loadtest.loadclient", "pub", "--kind", "herald",
             "--port", str(server.port), "--topics", "2", "--rate", "200", "--count", "10"],
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
        assert json.loads(out.stdout.splitlines()[-1])["sent"] == 10
        # Topic bench.t0 and bench.t1 get 5 messages each, 10 sockets each.
        assert wait_msgs(subs, 10 * SOCKETS // 2)["msgs"] == 10 * SOCKETS // 2
        lat = subs.call("latency")
        assert lat["n"] == 5 * SOCKETS // 2  # every other socket probes
        assert 0 < lat["p50_ms"] <= lat["max_ms"]
    finally:
        subs.stop()

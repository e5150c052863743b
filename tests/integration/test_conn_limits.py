"""Issue 9, connection limits, against a real `herald serve`: every byte queued for
a socket counts against its send buffer, so a client that never reads cannot grow
the server's memory, whatever it sends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from procs import MS, HeraldServer
from wsclient import RawClient, masked_frame

pytestmark = pytest.mark.integration

SECRET = "integration-secret-of-at-least-32-bytes"
# Far under what the old code reached (+580 MB to +1.5 GB), far over the bound
# (1 MiB of send buffer, plus socket buffers and allocator slack).
RSS_BOUND = 48 << 20


def rss(server: HeraldServer) -> int:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def watch_rss(server: HeraldServer, base: int, seconds: float) -> int:
    """The largest RSS growth seen over `seconds` (stops early once over the bound)."""
    worst = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        worst = max(worst, rss(server) - base)
        if worst > RSS_BOUND:
            break
        time.sleep(50 * MS)
    return worst


def flood(client: RawClient, data: bytes, total: int) -> int:
    """Send `data` repeatedly until `total` bytes went out or the server stops reading."""
    client.sock.settimeout(1000 * MS)
    sent = 0
    try:
        while sent < total:
            client.sock.sendall(data)
            sent += len(data)
    except TimeoutError:
        pass
    return sent


@pytest.fixture(scope="module")
def server() -> Iterator[HeraldServer]:
    s = HeraldServer(
        env={"HERALD_HISTORY": json.dumps([{"pattern": "hist.>", "size": 1000}])}
    ).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def auth_server() -> Iterator[HeraldServer]:
    s = HeraldServer(env={"HERALD_JWT_SECRET": SECRET, "HERALD_AUTH_TIMEOUT": "30"}).start()
    yield s
    s.stop()


def test_history_replays_to_a_client_that_never_reads_stay_bounded(server: HeraldServer) -> None:
    """Issue 9: 262 `since: 0` subscribes raised RSS by ~1.5 GB. Now one replay at a
    time goes out, and the next command waits until the socket drains."""
    data = "x" * 2000
    for _ in range(2):
        r = httpx.post(
            server.http + "/v1/publish/batch",
            json={"messages": [{"topic": "hist.big", "data": data} for _ in range(500)]},
        )
        assert r.status_code == 202, r.text
    client = RawClient(server.port, rcvbuf=4096)
    base = rss(server)
    try:
        for i in range(150):  # ~2 MB of replay each: 300 MB if all were queued
            client.send_json({"op": "subscribe", "id": i, "topic": "hist.big", "since": 0})
        grown = watch_rss(server, base, 3000 * MS)
    finally:
        client.close()
    assert grown < RSS_BOUND, f"RSS grew by {grown >> 20} MiB"


@pytest.mark.parametrize("authenticated", [True, False], ids=["open", "auth-window"])
def test_unread_pongs_stay_bounded(
    server: HeraldServer, auth_server: HeraldServer, authenticated: bool
) -> None:
    """Issue 9: unread pings grew RSS by 800 MB (580 MB during the auth window)."""
    target = server if authenticated else auth_server
    client = RawClient(target.port, rcvbuf=4096)
    base = rss(target)
    try:
        pings = masked_frame(0x9, b"p" * 125) * 512
        sent = flood(client, pings, 256 << 20)
        grown = watch_rss(target, base, 500 * MS)
    finally:
        client.close()
    assert grown < RSS_BOUND, f"RSS grew by {grown >> 20} MiB after {sent >> 20} MiB of pings"
    assert sent < 256 << 20, "the server kept reading a client that reads nothing"

"""Issue 9, connection limits, against a real `herald serve`: every byte queued for
a socket counts against its send buffer, so a client that never reads cannot grow
the server's memory, whatever it sends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from fanout.hub import Shape
from procs import MS, HeraldServer, RedisServer
from shared.filters import MATCH_ALL
from wsclient import (
    RawClient,
    assert_silent,
    close_code,
    connect,
    masked_frame,
    recv_json,
    recv_op,
)

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


def test_one_long_replay_to_a_client_that_never_reads_stays_bounded(server: HeraldServer) -> None:
    """A single `since: 0` on a 50 MB history: a page at a time, as the socket drains."""
    data = "z" * 50_000
    with httpx.Client(timeout=30) as http:
        # Small batches, so that publishing leaves no large freed heap for the replay
        # to reuse unseen.
        for _ in range(50):
            body = {"messages": [{"topic": "hist.huge", "data": data} for _ in range(20)]}
            r = http.post(server.http + "/v1/publish/batch", json=body)
            assert r.status_code == 202, r.text
    client = RawClient(server.port, rcvbuf=4096)
    base = rss(server)
    try:
        client.send_json({"op": "subscribe", "id": 1, "topic": "hist.huge", "since": 0})
        grown = watch_rss(server, base, 2000 * MS)
    finally:
        client.close()
    # One send buffer and one page (~1 MiB each) plus slack; the old code: +46 MiB.
    assert grown < 20 << 20, f"RSS grew by {grown >> 20} MiB"


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


# ---- commands take effect in order (redis engine: subscribe is always async) ---------


async def test_commands_take_effect_in_order_on_redis(redis_server: RedisServer) -> None:
    s = HeraldServer(
        env={
            "HERALD_ENGINE": "redis",
            "HERALD_REDIS_URL": redis_server.url,
            "HERALD_MAX_SUBSCRIPTIONS_PER_CONNECTION": "40",
        }
    ).start()
    try:
        ws = await connect(s.ws)
        key = Shape("rt.a", MATCH_ALL).sub_key  # deterministic: a client may pipeline it
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "topic": "rt.a"}))
        await ws.send(json.dumps({"op": "unsubscribe", "id": 2, "sub": key}))
        await ws.send(json.dumps({"op": "ping", "id": 3}))
        ops = [(await recv_json(ws))["op"] for _ in range(3)]
        assert ops == ["subscribed", "unsubscribed", "pong"]
        async with httpx.AsyncClient() as c:
            r = await c.post(s.http + "/v1/publish", json={"topic": "rt.a", "data": 1})
            assert r.status_code == 202
        await assert_silent(ws, 300 * MS)
        # Pipelined subscribes stop at the limit (old code: 1,502 of 1,000).
        for i in range(48):  # 8 refusals: under the malformed-frames limit
            await ws.send(json.dumps({"op": "subscribe", "id": i, "topic": f"rt.t{i}"}))
        replies = [await recv_json(ws) for _ in range(48)]
        assert [r["op"] for r in replies].count("subscribed") == 40
        await ws.close()
    finally:
        s.stop()


async def test_a_replay_of_many_pages_on_redis_is_whole_and_in_order(
    redis_server: RedisServer,
) -> None:
    """A 64 KiB send buffer makes 100 messages of 20 KB a replay of several pages."""
    s = HeraldServer(
        env={
            "HERALD_ENGINE": "redis",
            "HERALD_REDIS_URL": redis_server.url,
            "HERALD_SEND_BUFFER_BYTES": "65536",
            "HERALD_HISTORY": json.dumps([{"pattern": "hist.>", "size": 1000}]),
        }
    ).start()
    try:
        async with httpx.AsyncClient(timeout=30) as c:
            body = {"messages": [{"topic": "hist.r", "data": "r" * 20_000} for _ in range(100)]}
            assert (await c.post(s.http + "/v1/publish/batch", json=body)).status_code == 202
        ws = await connect(s.ws, max_size=None)
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "topic": "hist.r", "since": 0}))
        reply = await recv_json(ws)
        assert reply["op"] == "subscribed" and reply["recovered"] is True
        offsets: list[int] = []
        while len(offsets) < 100:
            frame = await recv_json(ws)
            assert frame["op"] == "msgs", frame
            offsets += [m["offset"] for m in frame["msgs"]]
        assert offsets == list(range(1, 101))
        async with httpx.AsyncClient() as c:
            await c.post(s.http + "/v1/publish", json={"topic": "hist.r", "data": "live"})
        assert [m["offset"] for m in (await recv_op(ws, "msgs"))["msgs"]] == [101]
        await ws.close()
    finally:
        s.stop()


# ---- keep-alive never depends on a pong ----------------------------------------------


def read_for(client: RawClient, seconds: float) -> list[tuple[int, bytes]]:
    """Every frame that arrives within `seconds` (then return, whatever came)."""
    frames: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        client.sock.settimeout(left)
        try:
            chunk = client.sock.recv(1 << 16)
        except TimeoutError:
            break
        if not chunk:
            break
        client.buf += chunk
        frames += client._parse()
    return frames


def test_peer_that_never_pongs_is_pinged_while_it_talks_and_dropped_once_silent() -> None:
    s = HeraldServer(env={"HERALD_PING_INTERVAL": "0.5", "HERALD_PING_TIMEOUT": "1"}).start()
    try:
        client = RawClient(s.port)
        pings = 0
        for i in range(5):  # a command every 0.8 s: quiet long enough to be pinged
            client.send_json({"op": "ping", "id": i})
            pings += sum(op == 0x9 for op, _ in read_for(client, 800 * MS))
        assert pings >= 2, "pinged once, then never again"
        closed = False
        client.sock.settimeout(5000 * MS)
        try:
            while client.sock.recv(1 << 16):
                pass
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
        client.close()
        assert closed, "a silent peer that never answered a ping was kept"
    finally:
        s.stop()


# ---- tokens expire while connected ---------------------------------------------------


def short_token(ttl: float, **claims: object) -> str:
    body: dict[str, object] = {"sub": "u1", "exp": int(time.time() + ttl), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


async def test_connection_ends_4401_at_exp_unless_refreshed(auth_server: HeraldServer) -> None:
    stale = await connect(f"{auth_server.ws}?token={short_token(1.5)}")
    kept = await connect(f"{auth_server.ws}?token={short_token(1.5)}")
    warning = await recv_json(stale)
    assert warning["op"] == "token_expiring" and warning["in_ms"] <= 1500
    assert (await recv_json(kept))["op"] == "token_expiring"
    fresh = short_token(600)
    await kept.send(json.dumps({"op": "auth", "id": 1, "token": fresh}))
    reply = await recv_json(kept)
    assert reply["op"] == "authenticated" and reply["exp"] > time.time() + 500
    with pytest.raises(ConnectionClosed):
        await recv_json(stale, 3000 * MS)
    assert stale.close_code == 4401 and stale.close_reason == "token expired"
    await kept.send(json.dumps({"op": "ping", "id": 2}))  # past the first exp: still open
    assert (await recv_op(kept, "pong", 3000 * MS))["id"] == 2
    await kept.close()


# ---- command rate limit --------------------------------------------------------------


def test_command_flood_is_rate_limited_then_closed_1008() -> None:
    s = HeraldServer(env={"HERALD_WS_COMMAND_RATE": "0.01", "HERALD_WS_COMMAND_BURST": "5"}).start()
    try:
        client = RawClient(s.port)
        for i in range(40):
            client.send_json({"op": "ping", "id": i})
        frames = client.read_frames(5000 * MS)
        client.close()
    finally:
        s.stop()
    replies = [json.loads(p) for op, p in frames if op == 0x1]
    assert [r["op"] for r in replies[:5]] == ["pong"] * 5
    assert replies[5]["code"] == "rate_limited"
    assert close_code(frames) == 1008

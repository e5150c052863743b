"""Issue 2 acceptance: a real `herald serve` (uvicorn) and real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from procs import MS, HeraldServer, herald_fixture, until
from wsclient import (
    RawClient,
    assert_silent,
    close_code,
    collect,
    connect,
    recv_json,
    recv_op,
    subscribe,
)

pytestmark = pytest.mark.integration

SECRET = "integration-secret-of-at-least-32-bytes"
API_KEY = "test-api-key"


server = herald_fixture({"HERALD_SEND_BUFFER_BYTES": "65536"})
auth_server = herald_fixture(
    {"HERALD_JWT_SECRET": SECRET, "HERALD_API_KEYS": API_KEY, "HERALD_AUTH_TIMEOUT": "1"}
)


def token(**claims: object) -> str:
    base: dict[str, object] = {"sub": "user-1", "exp": int(time.time()) + 600}
    base.update(claims)
    return jwt.encode(base, SECRET, algorithm="HS256")


async def publish(
    http: str, topic: str, data: object = None, headers: dict | None = None, **attrs: object
) -> httpx.Response:
    async with httpx.AsyncClient() as c:
        return await c.post(
            f"{http}/v1/publish",
            headers=headers,
            json={"topic": topic, "data": data, "attributes": attrs},
        )


def stats(server: HeraldServer) -> dict:
    return httpx.get(server.http + "/v1/stats").json()


# ---- delivery ---------------------------------------------------------------------


async def test_wildcard_filter_receives_exactly_matching_in_order(server: HeraldServer) -> None:
    a = await connect(server.ws)
    b = await connect(server.ws)
    other = await connect(server.ws)
    flt = {"gameId": ["1", "2"], "total": [{"numeric": [">=", 10]}]}
    sa = await subscribe(a, "game.*.score", filter=flt)
    sb = await subscribe(b, "game.*.score", filter=flt)
    assert sa["sub"] == sb["sub"]  # same shape, same deterministic key
    await subscribe(other, "chat.>")
    expected = []
    async with httpx.AsyncClient() as c:
        for i in range(30):
            gid = str(i % 4)
            topic = f"game.{gid}.score" if i % 5 else f"game.{gid}.other"
            body = {"topic": topic, "data": i, "attributes": {"gameId": gid, "total": i}}
            r = await c.post(f"{server.http}/v1/publish", json=body)
            assert r.status_code == 202
            if gid in ("1", "2") and i >= 10 and i % 5:
                expected.append(r.json()["id"])
    for ws in (a, b):
        got = await collect(ws, len(expected))
        assert [m["id"] for m in got] == expected
        assert all(m["topic"].endswith(".score") for m in got)
        await assert_silent(ws, 0.3)
    await assert_silent(other, 0.1)
    for ws in (a, b, other):
        await ws.close()


async def test_batch_ms_coalesces_publishes_into_one_frame(server: HeraldServer) -> None:
    ws = await connect(server.ws)
    window = int(2000 * MS * 1000)
    await subscribe(ws, "batch.t", batch_ms=window)
    async with httpx.AsyncClient() as c:
        for i in range(5):
            await c.post(f"{server.http}/v1/publish", json={"topic": "batch.t", "data": i})
    frame = await recv_json(ws, timeout=window / 1000 + 5)
    assert frame["op"] == "msgs"
    assert [m["data"] for m in frame["msgs"]] == [0, 1, 2, 3, 4]
    await ws.close()


async def test_latest_mode_keeps_only_newest_per_key(server: HeraldServer) -> None:
    ws = await connect(server.ws)
    window = int(1500 * MS * 1000)
    await subscribe(ws, "live.*", batch_ms=window, mode="latest", key="gameId")
    for data, gid in [("a1", "1"), ("b1", "2"), ("a2", "1"), ("a3", "1")]:
        await publish(server.http, "live.x", data, gameId=gid)
    frame = await recv_json(ws, timeout=window / 1000 + 5)
    assert [m["data"] for m in frame["msgs"]] == ["b1", "a3"]
    await ws.close()


async def test_ws_publish_and_idempotent_id(server: HeraldServer) -> None:
    ws = await connect(server.ws)
    await subscribe(ws, "idem.t")
    await ws.send(
        json.dumps({"op": "publish", "id": 7, "topic": "idem.t", "data": 1, "msg_id": "order-1"})
    )
    reply = await recv_op(ws, "published")
    assert reply["id"] == 7 and reply["msg_id"] == "order-1"
    r1 = await publish(server.http, "idem.t", 2)
    async with httpx.AsyncClient() as c:
        dup = await c.post(
            f"{server.http}/v1/publish", json={"topic": "idem.t", "data": 3, "id": "order-1"}
        )
    assert dup.status_code == 202 and dup.json()["id"] == "order-1"
    got = await collect(ws, 2)
    assert [m["id"] for m in got] == ["order-1", r1.json()["id"]]
    await assert_silent(ws, 0.3)
    await ws.close()


async def test_batch_publish_with_bad_entry_delivers_the_good_ones(server: HeraldServer) -> None:
    ws = await connect(server.ws)
    await subscribe(ws, "bp.>")
    entries = [
        {"topic": "bp.1", "data": "ok1"},
        {"topic": "bp..bad", "data": "x"},
        {"topic": "bp.2", "data": "ok2", "attributes": {"a": {"nested": 1}}},
        "not an object",
        {"topic": "bp.3", "data": "ok3"},
    ]
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{server.http}/v1/publish/batch", json={"messages": entries})
        too_many = await c.post(
            f"{server.http}/v1/publish/batch", json={"messages": [{"topic": "bp.1"}] * 501}
        )
    assert r.status_code == 202
    results = r.json()["results"]
    assert [("id" in x, x.get("error", {}).get("code")) for x in results] == [
        (True, None),
        (False, "invalid_topic"),
        (False, "invalid_request"),
        (False, "invalid_request"),
        (True, None),
    ]
    got = await collect(ws, 2)
    assert [m["data"] for m in got] == ["ok1", "ok3"]
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "invalid_request"
    await ws.close()


# ---- bad input -------------------------------------------------------------------


async def test_malformed_and_oversized_input_get_spec_codes(server: HeraldServer) -> None:
    ws = await connect(server.ws)
    cases = [
        ("{not json", "invalid_request"),
        (json.dumps([1, 2]), "invalid_request"),
        (json.dumps({"op": "nope", "id": 1}), "invalid_request"),
        (json.dumps({"op": "subscribe", "id": 2, "topic": "a..b"}), "invalid_topic"),
        (json.dumps({"op": "subscribe", "id": 3, "topic": "a.>.b"}), "invalid_topic"),
        (
            json.dumps({"op": "subscribe", "id": 4, "topic": "a", "filter": {"k": [{"bad": 1}]}}),
            "invalid_filter",
        ),
        (
            json.dumps({"op": "subscribe", "id": 5, "topic": "a", "batch_ms": 60001}),
            "invalid_request",
        ),
        (
            json.dumps({"op": "publish", "id": 6, "topic": "a", "data": "x" * 70_000}),
            "payload_too_large",
        ),
    ]
    for raw, code in cases:
        await ws.send(raw)
        reply = await recv_json(ws)
        assert reply["op"] == "error" and reply["code"] == code, (raw[:60], reply)
    # Still open and working after all of that.
    await ws.send(json.dumps({"op": "ping", "id": "p"}))
    assert await recv_json(ws) == {"op": "pong", "id": "p"}
    await ws.close()
    async with httpx.AsyncClient() as c:
        big = await c.post(f"{server.http}/v1/publish", json={"topic": "a", "data": "x" * 70_000})
        bad = await c.post(f"{server.http}/v1/publish", json={"topic": "a.*"})
        junk = await c.post(
            f"{server.http}/v1/publish",
            content=b"{nope",
            headers={"content-type": "application/json"},
        )
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_topic"
    assert junk.status_code == 400 and junk.json()["error"]["code"] == "invalid_request"


async def test_ten_malformed_frames_in_a_row_close_1008(server: HeraldServer) -> None:
    ws = await connect(server.ws)
    for _ in range(9):
        await ws.send("garbage")
        assert (await recv_json(ws))["op"] == "error"
    await ws.send(json.dumps({"op": "ping"}))  # a good command resets the count
    assert (await recv_json(ws))["op"] == "pong"
    for _ in range(10):
        await ws.send("garbage")
    with pytest.raises(ConnectionClosed):
        while True:
            await recv_json(ws)
    assert ws.close_code == 1008


async def test_frame_over_the_limit_closes_1009(server: HeraldServer) -> None:
    ws = await connect(server.ws, max_size=None)
    await ws.send("x" * (1 << 20 | 1))
    with pytest.raises(ConnectionClosed):
        await recv_json(ws)
    assert ws.close_code == 1009


async def test_unknown_path_and_plain_http_get_are_refused(server: HeraldServer) -> None:
    raw = RawClient(server.port, path="/nope")
    assert raw.status == 404
    raw.close()
    assert httpx.get(server.http + "/ws").status_code in (400, 404, 405, 426)


# ---- slow consumers -----------------------------------------------------------------


async def _flood(http: str, topic: str, n: int, size: int) -> None:
    async with httpx.AsyncClient() as c:
        for i in range(n):
            r = await c.post(
                f"{http}/v1/publish",
                json={"topic": topic, "data": "x" * size, "attributes": {"i": i}},
            )
            assert r.status_code == 202


async def test_stalled_socket_does_not_delay_others_and_is_told_lagged(
    server: HeraldServer,
) -> None:
    stalled = RawClient(server.port, rcvbuf=4096)
    stalled.send_json({"op": "subscribe", "id": 1, "topic": "slow.t"})
    fast = await connect(server.ws, max_size=None)
    await subscribe(fast, "slow.t")
    await until(lambda: stats(server)["subscriptions"] >= 2, "the stalled socket subscribed")
    before = stats(server)["messages_dropped"]
    n = 150
    flood = asyncio.create_task(_flood(server.http, "slow.t", n, 60_000))
    got = await collect(fast, n, timeout=30)
    await flood
    assert [m["attributes"]["i"] for m in got] == list(range(n))
    assert stats(server)["messages_dropped"] > before
    # Now the stalled socket reads again: it learns what it missed.
    frames = await asyncio.to_thread(stalled.read_frames, 3.0)
    ops = [json.loads(p)["op"] for op, p in frames if op == 0x1]
    assert "lagged" in ops
    lagged = next(json.loads(p) for op, p in frames if op == 1 and b'"lagged"' in p)
    assert lagged["dropped"] > 0
    stalled.close()
    await fast.close()


async def test_disconnect_policy_closes_stalled_socket_1013() -> None:
    s = HeraldServer(
        env={"HERALD_SEND_BUFFER_BYTES": "65536", "HERALD_SLOW_CONSUMER": "disconnect"}
    ).start()
    try:
        stalled = RawClient(s.port, rcvbuf=4096)
        stalled.send_json({"op": "subscribe", "id": 1, "topic": "slow.t"})
        fast = await connect(s.ws, max_size=None)
        await subscribe(fast, "slow.t")
        await until(lambda: stats(s)["subscriptions"] == 2, "the stalled socket subscribed")
        n = 150
        flood = asyncio.create_task(_flood(s.http, "slow.t", n, 60_000))
        got = await collect(fast, n, timeout=30)
        await flood
        assert len(got) == n
        assert stats(s)["slow_disconnects"] == 1
        frames = await asyncio.to_thread(stalled.read_frames, 10.0)
        assert close_code(frames) == 1013
        stalled.close()
        await fast.close()
    finally:
        s.stop()


# ---- auth ---------------------------------------------------------------------------


async def test_no_token_closes_4401(auth_server: HeraldServer) -> None:
    ws = await connect(auth_server.ws)
    with pytest.raises(ConnectionClosed):
        await recv_json(ws, timeout=5)
    assert ws.close_code == 4401


async def test_bad_token_closes_4401(auth_server: HeraldServer) -> None:
    ws = await connect(auth_server.ws + "?token=not-a-jwt")
    with pytest.raises(ConnectionClosed):
        await recv_json(ws)
    assert ws.close_code == 4401


async def test_subscribe_outside_claims_is_forbidden(auth_server: HeraldServer) -> None:
    t = token(subscribe=["game.>"], publish=["game.*.score"])
    ws = await connect(auth_server.ws + f"?token={t}")
    await subscribe(ws, "game.*.score")
    await ws.send(json.dumps({"op": "subscribe", "id": 9, "topic": "chat.1"}))
    reply = await recv_json(ws)
    assert reply == {"op": "error", "id": 9, "code": "forbidden", "message": reply["message"]}
    await ws.send(json.dumps({"op": "publish", "id": 10, "topic": "game.1.chat", "data": 1}))
    assert (await recv_json(ws))["code"] == "forbidden"
    await ws.close()


async def test_header_and_first_frame_auth(auth_server: HeraldServer) -> None:
    t = token(subscribe=[">"])
    ws = await connect(auth_server.ws, additional_headers={"Authorization": f"Bearer {t}"})
    await subscribe(ws, "x.y")
    await ws.close()
    ws = await connect(auth_server.ws)
    await ws.send(json.dumps({"op": "auth", "id": 1, "token": t}))
    assert (await recv_json(ws))["op"] == "authenticated"
    await subscribe(ws, "x.y")
    await ws.close()


async def test_http_publish_needs_credentials(auth_server: HeraldServer) -> None:
    r = await publish(auth_server.http, "game.1.score")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    bad = await publish(auth_server.http, "game.1.score", headers={"Authorization": "Bearer no"})
    assert bad.status_code == 401
    ok = await publish(
        auth_server.http, "game.1.score", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert ok.status_code == 202
    t = token(publish=["game.*.score"])
    forbidden = await publish(auth_server.http, "chat.1", headers={"Authorization": f"Bearer {t}"})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    allowed = await publish(
        auth_server.http, "game.2.score", headers={"Authorization": f"Bearer {t}"}
    )
    assert allowed.status_code == 202


# ---- keep-alive and drain --------------------------------------------------------------


async def test_keepalive_closes_dead_peer_and_keeps_live_one() -> None:
    s = HeraldServer(env={"HERALD_PING_INTERVAL": "0.5", "HERALD_PING_TIMEOUT": "0.5"}).start()
    try:
        live = await connect(s.ws, ping_interval=None)  # the library answers pings itself
        dead = RawClient(s.port)  # never reads, never answers
        await until(lambda: stats(s)["connections"] == 2, "both connected")
        await until(lambda: stats(s)["connections"] == 1, "the dead peer closed")
        frames = await asyncio.to_thread(dead.read_frames, 1.0)
        assert any(op == 0x9 for op, _ in frames)  # it was pinged
        assert stats(s)["connections"] == 1
        await live.send(json.dumps({"op": "ping"}))
        assert (await recv_json(live))["op"] == "pong"
        dead.close()
        await live.close()
    finally:
        s.stop()


async def test_sigterm_sends_reconnect_then_1012() -> None:
    s = HeraldServer(env={"HERALD_DRAIN_TIMEOUT": "5"}).start()
    try:
        clients = [await connect(s.ws) for _ in range(3)]
        for ws in clients:
            await subscribe(ws, "drain.t")
        assert s.proc is not None
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        for ws in clients:
            notice = await recv_json(ws)
            assert notice["op"] == "reconnect" and notice["reason"]
            assert 0 <= notice["after_ms"] <= 5000
            with pytest.raises(ConnectionClosed):
                await recv_json(ws)
            assert ws.close_code == 1012
        await asyncio.to_thread(s.proc.wait, 15)
        assert time.monotonic() - t0 < 15
    finally:
        s.stop()


def test_health_ready_metrics_stats_docs(server: HeraldServer) -> None:
    assert httpx.get(server.http + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.http + "/readyz").status_code == 200
    metrics = httpx.get(server.http + "/metrics").text
    for name in (
        "herald_connections",
        "herald_subscriptions",
        "herald_messages_published_total",
        "herald_messages_delivered_total",
        "herald_messages_dropped_total",
        "herald_frames_written_total",
    ):
        assert name in metrics
    assert "messages_delivered" in httpx.get(server.http + "/v1/stats").json()
    assert "/v1/publish" in httpx.get(server.http + "/openapi.json").json()["paths"]
    assert httpx.get(server.http + "/docs").status_code == 200

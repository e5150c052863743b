"""Issue 6: two redis-engine pods as the manifests run them; SIGTERM one while
clients are connected: they get `reconnect`, move to the other pod and resume
from history with no missed and no repeated message."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from procs import MS, HeraldServer, RedisServer
from wsclient import connect, recv_json, subscribe

pytestmark = pytest.mark.integration

TOPIC = "drain.game.1"
N = 120


@pytest.fixture
def pods() -> Iterator[tuple[HeraldServer, HeraldServer]]:
    redis = RedisServer().start()
    env = {
        "HERALD_ENGINE": "redis",
        "HERALD_REDIS_URL": redis.url,
        "HERALD_HISTORY": json.dumps([{"pattern": "drain.>", "size": 1000, "ttl": 600}]),
        "HERALD_DRAIN_TIMEOUT": "5",
    }
    a = HeraldServer(env=env).start()
    b = HeraldServer(env=env).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
        redis.stop()


async def client(a: HeraldServer, b: HeraldServer, started: asyncio.Event) -> list[int]:
    """Follow the topic on pod A, then on B after the drain; return data seen."""
    seen: list[int] = []
    ws = await connect(a.ws)
    reply = await subscribe(ws, TOPIC)
    epoch, offset = reply["epoch"], reply["offset"]
    started.set()
    notice = None
    try:
        while True:
            frame = await recv_json(ws, timeout=20)
            if frame["op"] == "reconnect":
                notice = frame
                continue
            for m in frame.get("msgs", ()):
                seen.append(m["data"])
                offset = m["offset"]
    except ConnectionClosed:
        pass
    assert notice is not None and ws.close_code == 1012
    await asyncio.sleep(notice["after_ms"] / 1000)
    ws = await connect(b.ws)
    reply = await subscribe(ws, TOPIC, since=offset, epoch=epoch)
    assert reply["recovered"] is True, reply
    while len(seen) < N:
        frame = await recv_json(ws, timeout=20)
        for m in frame.get("msgs", ()):
            seen.append(m["data"])
    await ws.close()
    return seen


async def test_sigterm_clients_reconnect_to_other_pod_and_resume(
    pods: tuple[HeraldServer, HeraldServer],
) -> None:
    a, b = pods
    events = [asyncio.Event() for _ in range(3)]
    followers = [asyncio.create_task(client(a, b, e)) for e in events]
    for e in events:
        await asyncio.wait_for(e.wait(), 10_000 * MS)
    async with httpx.AsyncClient() as http:
        for i in range(N):
            # Publishes go to the surviving pod, as a load balancer would send them.
            r = await http.post(f"{b.http}/v1/publish", json={"topic": TOPIC, "data": i})
            assert r.status_code == 202
            if i == N // 3:
                assert a.proc is not None
                a.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(10 * MS)
    results = await asyncio.wait_for(asyncio.gather(*followers), 60_000 * MS)
    for seen in results:
        assert seen == list(range(N))
    assert a.proc is not None and await asyncio.to_thread(a.proc.wait, 15) is not None

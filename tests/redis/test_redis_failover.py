"""Kill Redis under running pods, bring it back on the same port, keep delivering.

Failover is where systems die silently (Centrifugo #1189, socket.io#4845),
so this is tested with a real SIGKILL and no restart of the gateway processes.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from redis_harness import Inbox, herald_pods, publish, started, stats, ws_connect, ws_subscribe

from procs import RedisServer

pytestmark = pytest.mark.integration


async def _ready(client: httpx.AsyncClient, http: str) -> int:
    try:
        return (await client.get(http + "/readyz", timeout=1)).status_code
    except httpx.HTTPError:
        return 0


async def test_redis_killed_and_restarted(redis_server: RedisServer) -> None:
    env = {
        "HERALD_ENGINE": "redis",
        "HERALD_REDIS_URL": redis_server.url,
        "HERALD_HISTORY": json.dumps([{"pattern": "kept.>", "size": 100}]),
    }
    a, b = herald_pods(2, env)
    restarted: RedisServer | None = None
    with started(a, b):
        exact_ws = await ws_connect(b)
        await ws_subscribe(exact_ws, "fo.one")
        wild_ws = await ws_connect(b)
        await ws_subscribe(wild_ws, "fo.*")
        kept_ws = await ws_connect(b)
        kept = await ws_subscribe(kept_ws, "kept.one")
        exact, wild = Inbox(exact_ws), Inbox(wild_ws)
        async with httpx.AsyncClient(timeout=5) as client:
            # Healthy: a publish on pod a reaches both subscribers on pod b.
            deadline = time.monotonic() + 5
            while not (exact.msgs and wild.msgs) and time.monotonic() < deadline:
                assert (await publish(client, a, "fo.one", {"n": -1})).status_code == 202
                await asyncio.sleep(0.1)
            assert exact.msgs and wild.msgs
            r = await publish(client, a, "kept.one", {"n": 0})
            assert r.json()["offset"] == 1

            # SIGKILL: both pods turn unready within ~1-2 s, publishes answer 503.
            redis_server.kill()
            killed = time.monotonic()
            for pod in (a, b):
                while await _ready(client, pod.http) != 503:
                    assert time.monotonic() - killed < 2.0, "readyz still 200 after 2 s"
                    await asyncio.sleep(0.05)
            unready_in = time.monotonic() - killed
            r = await publish(client, a, "fo.one", {"n": -2})
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "backplane_unavailable"
            r = await publish(client, b, "kept.one", {"n": -2})
            assert r.status_code == 503

            await asyncio.sleep(1.5)  # let the listeners back off a few times
            restarted = RedisServer(port=redis_server.port, dir=redis_server.dir).start()
            up = time.monotonic()
            try:
                # Delivery resumes by itself within 5 s, exact and wildcard alike.
                before = (len(exact.msgs), len(wild.msgs))
                n = 0
                while len(exact.msgs) == before[0] or len(wild.msgs) == before[1]:
                    assert time.monotonic() - up < 5.0, "no delivery 5 s after Redis came back"
                    n += 1
                    r = await publish(client, a, "fo.one", {"n": n})
                    await asyncio.sleep(0.05)
                recovered_in = time.monotonic() - up
                for pod in (a, b):  # and both pods report ready again
                    while await _ready(client, pod.http) != 200:
                        assert time.monotonic() - up < 5.0, "not ready 5 s after Redis came back"
                        await asyncio.sleep(0.05)
                st = (await stats(client, b))["backplane"]
                assert st["reconnects"] >= 1
                assert st["resubscribes"] >= 3  # fo.one, fo (prefix), kept.one (+ control)

                # Redis came back empty (no persistence): history is gone, so a
                # resume is told `recovered: false` under a new epoch.
                ws = await ws_connect(a)
                reply = await ws_subscribe(ws, "kept.one", since=1, epoch=kept["epoch"])
                assert reply["recovered"] is False
                assert reply["epoch"] != kept["epoch"]
                await ws.close()
            finally:
                for inbox in (exact, wild):
                    await inbox.close()
                await kept_ws.close()
                restarted.stop()
    print(f"unready after {unready_in:.2f}s; delivering again {recovered_in:.2f}s after restart")
    assert recovered_in < 5.0

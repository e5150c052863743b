"""`HERALD_WORKERS`: several processes share the port; Redis joins them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from procs import MS, ROOT, HeraldServer, RedisServer
from wsclient import collect, connect, subscribe

pytestmark = pytest.mark.integration


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


async def test_two_workers_deliver_across_processes(redis: RedisServer) -> None:
    s = HeraldServer(
        env={"HERALD_ENGINE": "redis", "HERALD_REDIS_URL": redis.url, "HERALD_WORKERS": "2"}
    ).start()
    try:
        # Enough sockets that both workers get some (the kernel spreads accepts).
        clients = [await connect(s.ws) for _ in range(8)]
        for ws in clients:
            await subscribe(ws, "w.t")
        await asyncio.sleep(300 * MS)  # both workers' Redis subscriptions are in place
        async with httpx.AsyncClient() as c:
            for i in range(5):
                assert (
                    await c.post(f"{s.http}/v1/publish", json={"topic": "w.t", "data": i})
                ).status_code == 202
        for ws in clients:
            got = await collect(ws, 5)
            assert [m["data"] for m in got] == [0, 1, 2, 3, 4]
            await ws.close()
        assert s.proc is not None
        pids = subprocess.run(
            ["pgrep", "-P", str(s.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(pids) >= 2  # the supervisor's worker processes
    finally:
        s.stop()


def test_workers_need_the_redis_engine() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0 and "HERALD_ENGINE=redis" in out.stderr

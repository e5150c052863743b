"""Helpers for the Redis backplane tests: a private Redis Cluster and WS clients.

Everything runs as real processes on free loopback ports and is stopped by PID
(tests/procs.py); nothing touches a Redis on 6379.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from procs import MS, HeraldServer, RedisServer, free_port, until


@dataclass
class RedisClusterServers:
    """Three masters, no replicas: `redis-cli --cluster create`, then wait for ok."""

    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self, size: int = 3) -> RedisClusterServers:
        try:
            for _ in range(size):
                # The bus port defaults to port + 10000, which overflows for
                # high ephemeral ports: give it its own free port.
                node = RedisServer(
                    args=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "3000",
                        "--cluster-port",
                        str(free_port()),
                    )
                )
                self.nodes.append(node.start())
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            deadline = time.monotonic() + 20_000 * MS
            while time.monotonic() < deadline:
                if all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in self.nodes):
                    return self
                time.sleep(100 * MS)
            raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cli_all(self, *args: str) -> list[str]:
        return [n.cli(*args) for n in self.nodes]


def shard_channels(cluster: RedisClusterServers) -> set[str]:
    """Every shard channel with a subscriber, over all masters."""
    out: set[str] = set()
    for text in cluster.cli_all("PUBSUB", "SHARDCHANNELS"):
        out.update(line for line in text.splitlines() if line)
    return out


def plain_channels(redis: RedisServer) -> set[str]:
    return {line for line in redis.cli("PUBSUB", "CHANNELS").splitlines() if line}


def herald_pods(n: int, env: dict[str, str]) -> list[HeraldServer]:
    return [HeraldServer(env=dict(env)) for _ in range(n)]


@contextlib.contextmanager
def started(*servers: HeraldServer) -> Iterator[None]:
    """Start gateway processes side by side (in parallel), stop them by PID."""
    try:
        _start_parallel(list(servers))
        yield
    finally:
        for s in servers:
            s.stop()


def _start_parallel(servers: list[HeraldServer]) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(len(servers)) as pool:
        for f in [pool.submit(s.start) for s in servers]:
            f.result()


# ---- clients -------------------------------------------------------------------------


async def ws_connect(server: HeraldServer) -> ClientConnection:
    return await websockets.connect(server.ws, compression=None, open_timeout=10)


async def ws_subscribe(ws: ClientConnection, topic: str, **fields: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"op": "subscribe", "id": 1, "topic": topic, **fields}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10_000 * MS))
        if frame.get("op") == "subscribed":
            return dict(frame)
        if frame.get("op") == "error":
            raise AssertionError(frame)


class Inbox:
    """Reads one WebSocket in the background; keeps every delivered envelope."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.msgs: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, asyncio.CancelledError):
            async for raw in self.ws:
                frame = json.loads(raw)
                self.frames.append(frame)
                if frame.get("op") == "msgs":
                    self.msgs.extend(frame["msgs"])

    def data(self, key: str = "n") -> list[Any]:
        return [m["data"][key] for m in self.msgs if isinstance(m.get("data"), dict)]

    async def wait_for(self, n: int, timeout: float = 10_000 * MS) -> None:
        # No failure here: the caller's assertion on the messages says what is missing.
        with contextlib.suppress(AssertionError):
            await until(lambda: len(self.msgs) >= n, f"{n} messages", timeout)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.ws.close()


async def publish(
    client: httpx.AsyncClient, server: HeraldServer, topic: str, data: Any, **extra: Any
) -> httpx.Response:
    body = {"topic": topic, "data": data, **extra}
    return await client.post(server.http + "/v1/publish", json=body)


async def stats(client: httpx.AsyncClient, server: HeraldServer) -> dict[str, Any]:
    r = await client.get(server.http + "/v1/stats")
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out

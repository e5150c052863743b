"""Issue 12 scenarios for the Python client against real `herald serve` processes.

The same scenarios run for the JS client (clients/js/test/scenarios.js) in Node and
in Chromium: tests/clients/test_js_client.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from herald_client import ConnectionLost, HeraldClient, Job
from lab import API_KEY, Lab
from procs import ROOT

pytestmark = pytest.mark.integration


def rand() -> str:
    return uuid.uuid4().hex[:8]


async def until(cond: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


async def collect(sub: Any, n: int, timeout: float = 20, field: str | None = "data") -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        async for msg in sub:
            out.append(msg[field] if field else msg)
            if len(out) == n:
                break
    return out


class CountingTokens:
    """A `get_token` callback that counts how often the client asked."""

    def __init__(self, make: Callable[[], str]) -> None:
        self.make = make
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.make()


async def test_wildcard_filter_gets_exactly_the_matching_messages_in_order(lab: Lab) -> None:
    env = await asyncio.to_thread(lab.setup, "basic")
    r = rand()
    async with HeraldClient(env["ws"], token=API_KEY) as client:
        sub = await client.subscribe(f"wf.{r}.*", filter={"kind": ["keep"]})
        for i in range(30):
            kind = "keep" if i % 3 == 0 else "drop"
            await client.publish(f"wf.{r}.{'ab'[i % 2]}", i, attributes={"kind": kind})
        await client.publish(f"other.{r}.a", -1, attributes={"kind": "keep"})
        await client.publish(f"wf.{r}.end", 99, attributes={"kind": "keep"})
        got = await collect(sub, 11)
    assert got == [*range(0, 30, 3), 99]


async def test_drain_follows_reconnect_to_the_other_gateway_exactly_once_in_order(
    lab: Lab,
) -> None:
    env = await asyncio.to_thread(lab.setup, "drain")
    topic = f"drain.{rand()}"
    notices: list[dict[str, Any]] = []
    async with HeraldClient(env["ws"], min_backoff=0.1, max_backoff=1) as client:
        client.on("reconnect", notices.append)
        sub = await (await client.subscribe(topic)).ready()
        assert client.url == env["ws"][0]
        publisher = asyncio.create_task(
            asyncio.to_thread(lab.publish_steady, env["id"], topic, 500, 4, 150)
        )
        got = await collect(sub, 500, timeout=40)
        await publisher
        assert client.url == env["ws"][1]
    assert got == list(range(500))
    assert sub.delivered == 500
    assert len(notices) == 1


async def test_crash_reconnects_with_backoff_and_resumes(lab: Lab) -> None:
    env = await asyncio.to_thread(lab.setup, "crash")
    topic = f"crash.{rand()}"
    resumes: list[dict[str, Any]] = []
    async with HeraldClient(env["ws"], min_backoff=0.1, max_backoff=1) as client:
        sub = await (await client.subscribe(topic)).ready()
        sub.on("recovered", resumes.append)
        for i in range(5):
            await client.publish(topic, i, id=f"{topic}-{i}")
        assert await collect(sub, 5) == list(range(5))
        before = client.attempts
        await asyncio.to_thread(lab.kill_restart, env["id"], 2.0)
        await until(lambda: client.state != "open")
        # Published while the gateway is down: queued, sent once it is back.
        offline = [
            asyncio.create_task(client.publish(topic, i, id=f"{topic}-{i}")) for i in range(5, 10)
        ]
        got = await collect(sub, 5, timeout=30, field=None)
        await asyncio.gather(*offline)
        attempts = client.attempts - before
    # Pipelined publishes may be applied in any order on the redis engine; each once,
    # and the subscriber sees them in offset order.
    assert sorted(m["data"] for m in got) == list(range(5, 10))
    offsets = [m["offset"] for m in got]
    assert offsets == sorted(offsets) and len(set(offsets)) == 5
    # About 2 s of downtime at 0.1-1 s full-jitter backoff: a few attempts, no tight loop.
    assert 2 <= attempts <= 25, attempts
    assert client.connects == 2
    assert [r["recovered"] for r in resumes] == [True]


async def test_silent_gateway_is_declared_dead_and_replaced(lab: Lab) -> None:
    env = await asyncio.to_thread(lab.setup, "crash")
    drops: list[dict[str, Any]] = []
    client = HeraldClient(
        env["ws"], ping_interval=0.3, ping_timeout=0.3, connect_timeout=0.5, min_backoff=0.1
    )
    topic = f"live.{rand()}"
    async with client:
        client.on("disconnected", drops.append)
        sub = await (await client.subscribe(topic)).ready()
        await asyncio.to_thread(lab.freeze, env["id"], True)
        try:
            # In flight when the connection dies: resent with its id, refused without.
            with_id = asyncio.create_task(client.publish(topic, "once", id=f"{topic}-1"))
            without_id = asyncio.create_task(client.publish(topic, "maybe"))
            await until(lambda: bool(drops), what="liveness timeout")
        finally:
            await asyncio.to_thread(lab.freeze, env["id"], False)
        await until(lambda: client.connects == 2, what="reconnected")
        await with_id
        with pytest.raises(ConnectionLost):
            await without_id
        await client.publish(topic, "after")
        got: list[Any] = []
        while "after" not in got:  # "maybe" may or may not have been applied
            got += await collect(sub, 1)
    assert "presumed dead" in drops[0]["reason"]
    assert got.count("once") == 1 and got[-1] == "after"


async def test_offset_older_than_history_reports_recovered_false(lab: Lab) -> None:
    env = await asyncio.to_thread(lab.setup, "basic")
    topic = f"small.{rand()}"
    events: list[tuple[str, dict[str, Any]]] = []
    async with HeraldClient(env["ws"], token=API_KEY) as client:
        for i in range(20):
            await client.publish(topic, i)
        sub = await client.subscribe(
            topic, since=1, on_event=lambda name, info: events.append((name, info))
        )
        await client.publish(topic, 20)
        assert await collect(sub, 1) == [20]
    recovered = [info["recovered"] for name, info in events if name == "recovered"]
    assert recovered == [False]


async def test_token_expiring_in_3s_is_refreshed_and_the_connection_stays_up(lab: Lab) -> None:
    env = await asyncio.to_thread(lab.setup, "basic")
    get_token = CountingTokens(lambda: lab.token(3))

    refreshed: list[dict[str, Any]] = []
    topic = f"tok.{rand()}"
    async with HeraldClient(env["ws"], get_token=get_token) as client:
        client.on("token_refreshed", refreshed.append)
        sub = await client.subscribe(topic)
        await asyncio.sleep(4.5)  # past the first token's exp
        await client.publish(topic, "still here")
        assert await collect(sub, 1) == ["still here"]
        assert client.connects == 1 and client.state == "open"
    assert len(refreshed) >= 1 and get_token.calls >= 2


async def test_consumer_acks_and_nacks(lab: Lab) -> None:
    await asyncio.to_thread(lab.setup, "basic")
    env = await asyncio.to_thread(lab.setup, "basic")
    queue = f"q-{rand()}"
    await asyncio.to_thread(lab.queue, queue, [{"n": 0}, {"n": 1}, {"n": 2}])
    seen: list[tuple[int, int]] = []

    def handler(job: Job) -> None:
        seen.append((job.body["n"], job.receive_count))
        if job.body["n"] == 1 and job.receive_count == 1:
            raise RuntimeError("first try fails")

    async with HeraldClient(env["ws"], token=API_KEY) as client:
        consumer = await client.consume(queue, handler, prefetch=3, nack_delay=lambda _: 0)
        await until(lambda: consumer.acked == 3)
    assert sorted(seen) == [(0, 1), (1, 1), (1, 2), (2, 1)]
    assert consumer.nacked == 1
    stats = await asyncio.to_thread(lab.queue_stats, queue)
    assert (stats["visible"], stats["in_flight"], stats["deleted_total"]) == (0, 0, 3)


CONSUMER = """
import asyncio, sys
from herald_client import HeraldClient

async def main():
    async with HeraldClient(sys.argv[1], token=sys.argv[2]) as client:
        async def handler(job):
            print("got", job.id, flush=True)
            await asyncio.Event().wait()  # never finishes: killed mid-job
        await client.consume(sys.argv[3], handler)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_consumer_killed_mid_job_sees_the_job_again(lab: Lab) -> None:
    env = await asyncio.to_thread(lab.setup, "basic")
    queue = f"qk-{rand()}"
    await asyncio.to_thread(lab.queue, queue, [{"charge": 1}])
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, env["ws"][0], API_KEY, queue],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)
        first_id = line.split()[1]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    jobs: list[Job] = []
    async with HeraldClient(env["ws"], token=API_KEY) as client:
        consumer = await client.consume(queue, jobs.append)
        await until(lambda: consumer.acked == 1)
    assert [(j.id, j.receive_count) for j in jobs] == [(first_id, 2)]


async def test_offline_queue_is_bounded_and_rejects_clearly(lab: Lab) -> None:
    from herald_client import OfflineQueueFull

    # Nothing listens on this port: the client stays disconnected.
    client = HeraldClient("ws://127.0.0.1:9/ws", max_offline_commands=2, min_backoff=5)
    async with client:
        first = asyncio.create_task(client.publish("a.b", 1))
        second = asyncio.create_task(client.publish("a.b", 2))
        await asyncio.sleep(0)
        with pytest.raises(OfflineQueueFull):
            await client.publish("a.b", 3)
    for task in (first, second):
        with pytest.raises(Exception, match="client closed"):
            await task


async def test_close_1008_never_loops(lab: Lab) -> None:
    env = await asyncio.to_thread(lab.setup, "basic")
    closed: list[dict[str, Any]] = []
    async with HeraldClient(env["ws"], token=API_KEY, min_backoff=0.05) as client:
        client.on("closed", closed.append)
        await client.wait_open()
        for _ in range(10):  # ten malformed commands in a row: the server closes 1008
            with pytest.raises(Exception):  # noqa: B017
                await client.request({"op": "nonsense"})
        await until(lambda: client.state == "closed")
        await asyncio.sleep(0.5)
        assert client.attempts == 1
    assert closed and closed[0]["code"] == 1008


async def test_4401_asks_get_token_once_then_gives_up(lab: Lab) -> None:
    env = await asyncio.to_thread(lab.setup, "basic")
    bad_token = CountingTokens(lambda: "not-a-valid-token")

    async with HeraldClient(env["ws"], token="also-invalid", get_token=bad_token) as client:
        await until(lambda: client.state == "closed")
        assert client.attempts == 2
    assert bad_token.calls == 1

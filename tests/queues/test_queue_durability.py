"""Crash tests: a SIGKILLed writer (SQLite) and a SIGKILLed Redis with AOF lose nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from queue_helpers import FakeClock, make_service

from fanout.queues import QueueService
from procs import MS, ROOT, RedisServer
from shared.errors import StoreUnavailable

T = TypeVar("T")

# Sends messages one at a time for ever, printing each accepted id; it claims the
# first 50 without acking them, so some are in flight when it is killed.
WRITER = """
import asyncio, sys, time
from pathlib import Path
from fanout.queues import open_queue_service

async def main():
    svc = open_queue_service(engine="memory", data_dir=Path(sys.argv[1]), redis_url="")
    await svc.start()
    await svc.create_or_update("jobs", {"visibility_timeout": 60})
    i = 0
    while True:
        sent = await svc.send("jobs", {"body": i})
        print("sent", sent["id"], flush=True)
        i += 1
        if i == 50:
            msgs = await svc.receive("jobs", max=50)
            print("claimed", len(msgs), flush=True)

asyncio.run(main())
"""


async def consume_all(svc: QueueService, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while batch := await svc.receive(name, max=100):
        out += batch
        await svc.ack(name, [m["receipt"] for m in batch])
    return out


async def test_sqlite_writer_killed_mid_way_loses_nothing(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    accepted: list[str] = []
    claimed = 0

    def take(line: str) -> None:
        nonlocal claimed
        kind, value = line.split()
        if kind == "sent":
            accepted.append(value)
        else:
            claimed = int(value)

    try:
        assert proc.stdout is not None
        while len(accepted) < 300:
            line = proc.stdout.readline()
            assert line, f"writer died: {proc.stderr.read() if proc.stderr else ''}"
            take(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # The writer kept sending while the 300th line was read and the kill was
        # on its way: the sends it acknowledged in that gap are still in the pipe.
        if proc.stdout is not None:
            for line in proc.stdout.read().splitlines(keepends=True):
                if line.endswith("\n"):  # a line cut by the kill was never acknowledged
                    take(line)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert claimed == 50

    clock = FakeClock(time.time())
    svc = make_service("sqlite", "", tmp_path, clock)
    await svc.start()
    try:
        stats = await svc.get("jobs")
        assert stats["in_flight"] == 50  # claimed before the crash, never acked
        first = await consume_all(svc, "jobs")
        clock.advance(61)  # their visibility timeout runs out: visible again
        second = await consume_all(svc, "jobs")
        assert {m["receive_count"] for m in second} == {2}
        ids = [m["id"] for m in first + second]
        assert len(ids) == len(set(ids))  # no duplicates
        assert set(accepted) <= set(ids)  # every acknowledged send survived
        assert len(ids) - len(accepted) <= 1  # at most the send in progress at the kill
    finally:
        await svc.close()


async def retry(call: Callable[[], Awaitable[T]], timeout: float = 10_000 * MS) -> T:
    """Retry through the 503s of the first calls after Redis comes back."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(50 * MS)


@pytest.mark.integration
async def test_redis_killed_with_aof_loses_nothing(tmp_path: Path) -> None:
    args = ("--appendonly", "yes", "--appendfsync", "always")
    server = RedisServer(args=args).start()
    restarted: RedisServer | None = None
    clock = FakeClock()
    svc = make_service("redis", server.url, tmp_path, clock, namespace="durable")
    await svc.start()
    try:
        await svc.create_or_update("jobs", {"visibility_timeout": 30})
        accepted: list[str] = []
        for start in range(0, 10_000, 100):
            results = await svc.send_batch(
                "jobs", [{"body": {"n": n}} for n in range(start, start + 100)]
            )
            accepted += [r["id"] for r in results]
        acked: set[str] = set()
        for _ in range(50):
            batch = await svc.receive("jobs", max=100)
            results = await svc.ack("jobs", [m["receipt"] for m in batch])
            acked |= {m["id"] for m, r in zip(batch, results, strict=True) if r.get("ok")}
        in_flight = await svc.receive("jobs", max=100)  # claimed, never acked
        assert len(acked) == 5_000 and len(in_flight) == 100

        server.kill()
        restarted = RedisServer(port=server.port, dir=server.dir, args=args).start()

        clock.advance(31)  # the unacked claims time out
        stats = await retry(lambda: svc.get("jobs"))
        assert stats["visible"] == 5_000 and stats["in_flight"] == 0
        rest = await retry(lambda: consume_all(svc, "jobs"))
        rest_ids = [m["id"] for m in rest]
        assert len(rest_ids) == len(set(rest_ids)) == 5_000
        assert acked.isdisjoint(rest_ids)
        assert acked | set(rest_ids) == set(accepted)
        redelivered = {m["id"]: m["receive_count"] for m in rest}
        assert all(redelivered[m["id"]] == 2 for m in in_flight)
    finally:
        await svc.close()
        (restarted or server).stop()
        server.stop()


async def test_redis_interrupted_dead_letter_move_finishes_once(
    shared_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the steps of a cross-queue move neither loses nor doubles it."""
    from fanout.queues.redis_keys import OUTBOX
    from fanout.queues.redis_store import RedisQueueService

    clock = FakeClock()
    svc = make_service("redis", shared_redis.url, tmp_path, clock, namespace="outbox-test")
    assert isinstance(svc, RedisQueueService)
    await svc.start()
    try:
        await svc.create_or_update("dlq", {})
        await svc.create_or_update(
            "work",
            {"visibility_timeout": 1, "dead_letter": {"queue": "dlq", "max_receive_count": 1}},
        )
        sent = await svc.send("work", {"body": "poison"})
        await svc.receive("work")
        clock.advance(2)
        real_drain = svc._drain

        async def crash(name: str) -> tuple[dict[str, int], int]:
            return {}, 0  # the process dies right after the source's script

        monkeypatch.setattr(svc, "_drain", crash)
        assert await svc.receive("work") == []
        monkeypatch.setattr(svc, "_drain", real_drain)
        outbox = svc.keys.queue("work")[OUTBOX]
        pending: dict[Any, Any] = await svc._redis.hgetall(outbox)  # in neither queue, but not lost
        assert len(pending) == 1
        assert (await svc.get("work"))["visible"] == 0 and (await svc.get("dlq"))["visible"] == 0

        await svc._housekeep()  # what any process does within seconds (or at start)
        assert await svc._redis.hlen(outbox) == 0
        # A crash after the import but before the outbox entry was dropped: replay it.
        await svc._redis.hset(outbox, mapping=pending)
        await svc._housekeep()
        assert await svc._redis.hlen(outbox) == 0
        msgs = await svc.receive("dlq", max=10)
        assert [m["id"] for m in msgs] == [sent["id"]]  # exactly once
    finally:
        await svc.close()

"""The worker helper (herald_client.Worker) and examples/worker.py against real gateways:
a duplicate delivery's handler runs once, with the SQLite and the Redis store."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from herald_client import Job, RedisIdempotency, SQLiteIdempotency, Worker
from lab import API_KEY, Lab
from procs import ROOT, RedisServer

pytestmark = pytest.mark.integration


def queue_name() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


async def seeded_queue(lab: Lab, bodies: list[Any]) -> tuple[dict[str, Any], str]:
    """The basic lab's endpoints and a fresh queue holding `bodies`."""
    env = await asyncio.to_thread(lab.setup, "basic")
    queue = queue_name()
    await asyncio.to_thread(lab.queue, queue, bodies)
    return env, queue


async def until_empty(lab: Lab, queue: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while True:
            s = await asyncio.to_thread(lab.queue_stats, queue)
            if s["visible"] == s["in_flight"] == s["delayed"] == 0:
                return
            await asyncio.sleep(0.05)


async def run_workers(workers: list[Worker], lab: Lab, queue: str) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        await until_empty(lab, queue)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_worker_runs_a_duplicate_deliverys_handler_once_sqlite(
    lab: Lab, tmp_path: Path
) -> None:
    # The seed's failure: the app sent "charge order 7" twice.
    env, queue = await seeded_queue(lab, [{"order": 7}, {"order": 7}, {"order": 8}])
    charged: list[int] = []
    store = SQLiteIdempotency(tmp_path / "done.db")
    worker = Worker(
        queue,
        lambda job: charged.append(job.body["order"]),
        idempotency=store,
        key=lambda job: f"charge:{job.body['order']}",
        url=env["http"][0],
        token=API_KEY,
        wait=1,
        busy_delay=0,
    )
    await run_workers([worker], lab, queue)
    store.close()
    assert sorted(charged) == [7, 8]
    assert (worker.handled, worker.skipped) == (2, 1)


async def test_workers_share_a_redis_store_over_http_and_websocket(
    lab: Lab, redis_server: RedisServer
) -> None:
    env, queue = await seeded_queue(lab, [{"order": i % 10} for i in range(20)])
    charged: list[int] = []

    async def charge(job: Job) -> None:
        await asyncio.sleep(0.01)
        charged.append(job.body["order"])

    stores = [RedisIdempotency.from_url(redis_server.url) for _ in range(2)]
    workers = [
        Worker(
            queue,
            charge,
            idempotency=store,
            key=lambda job: f"charge:{job.body['order']}",
            url=env["http"][0],
            token=API_KEY,
            transport=transport,  # type: ignore[arg-type]
            wait=1,
            busy_delay=0,
        )
        for store, transport in zip(stores, ("http", "ws"), strict=True)
    ]
    await run_workers(workers, lab, queue)
    for store in stores:
        await store.close()
    assert Counter(charged) == Counter(range(10))
    assert sum(w.skipped for w in workers) == 10


async def test_example_worker_skips_the_duplicate_and_stops_on_sigterm(
    lab: Lab, tmp_path: Path
) -> None:
    env, queue = await seeded_queue(lab, [{"order": 1}, {"order": 1}, {"order": 2}])
    log = tmp_path / "worker.log"
    worker_env: dict[str, Any] = {
        **os.environ,
        "HERALD_URL": env["http"][0],
        "HERALD_API_KEY": API_KEY,
        "HERALD_QUEUE": queue,
        "WORKER_KEY": "order",
        "WORKER_CONCURRENCY": "1",
        "WORKER_WAIT": "1",
        "WORKER_IDEMPOTENCY": str(tmp_path / "done.db"),
        "WORKER_ALIVE_FILE": str(tmp_path / "alive"),
    }
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "examples/worker.py"],
            cwd=ROOT,
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await until_empty(lab, queue)
        os.kill(proc.pid, signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = log.read_text()
    assert "stopped: 2 jobs handled, 1 duplicates skipped, 0 failed" in text, text
    assert (tmp_path / "alive").exists()

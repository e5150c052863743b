"""Example Herald queue worker on `herald_client.Worker`: each job's handler runs once,
even when Herald delivers the job twice.

    HERALD_URL=http://localhost:8080 HERALD_API_KEY=... HERALD_QUEUE=jobs \
        python examples/worker.py

Delivery is at-least-once: a job whose ack is lost (crash, network, an expired
visibility timeout) comes back. The worker remembers finished jobs in an idempotency
store keyed by message id (or by WORKER_KEY, a field of the JSON body, when the app
may send the same work twice: an order id for a charge), so the duplicate is acked
without running `handle` again. A job that raises is nacked with a growing delay until
the queue's `max_receive_count` moves it to its dead-letter queue.

Settings (environment):
    HERALD_URL          gateway base URL (default http://localhost:8080)
    HERALD_API_KEY      API key or admin JWT (HERALD_TOKEN works too; empty: auth off)
    HERALD_QUEUE        queue name (default jobs)
    WORKER_TRANSPORT    http (long polling, default) or ws (WebSocket consumer)
    WORKER_CONCURRENCY  jobs handled at once, 1-100 (default 10)
    WORKER_WAIT         long-poll seconds, 0-20 (default 20)
    WORKER_KEY          body field used as idempotency key (default: the message id)
    WORKER_IDEMPOTENCY  redis://... (SET NX + TTL, shared by every worker) or a SQLite
                        file path (default /tmp/worker-done.db; empty: off)
    WORKER_ALIVE_FILE   touched after every poll, for a liveness probe
                        (default /tmp/worker-alive; empty: off)

SIGTERM/SIGINT: stop polling, finish and ack the jobs in hand, exit 0. That takes
at most the handler's run time, so keep the pod's terminationGracePeriodSeconds
above it (k8s/base/worker-deployment.yaml).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from herald_client.consumer import Job
from herald_client.idempotency import IdempotencyStore, RedisIdempotency, SQLiteIdempotency
from herald_client.worker import Worker

log = logging.getLogger("herald.worker")


async def handle(job: Job) -> None:
    """Do the job. Replace with real work; raise to have the job retried later."""
    log.info("job %s (receive #%s): %s", job.id, job.receive_count, job.body)


def store_from_env() -> IdempotencyStore | None:
    where = os.environ.get("WORKER_IDEMPOTENCY", "/tmp/worker-done.db")
    if not where:
        return None
    if where.startswith(("redis://", "rediss://")):
        return RedisIdempotency.from_url(where)
    return SQLiteIdempotency(where)


def worker_from_env() -> Worker:
    field = os.environ.get("WORKER_KEY", "")

    def key(job: Job) -> str:
        body: Any = job.body
        if field and isinstance(body, dict) and field in body:
            return f"{job.queue}:{body[field]}"
        return job.id

    alive = os.environ.get("WORKER_ALIVE_FILE", "/tmp/worker-alive")
    transport = os.environ.get("WORKER_TRANSPORT", "http")
    return Worker(
        os.environ.get("HERALD_QUEUE", "jobs"),
        handle,
        idempotency=store_from_env(),
        key=key,
        url=os.environ.get("HERALD_URL", "http://localhost:8080"),
        token=os.environ.get("HERALD_API_KEY") or os.environ.get("HERALD_TOKEN") or None,
        transport="ws" if transport == "ws" else "http",
        concurrency=int(os.environ.get("WORKER_CONCURRENCY", "10")),
        wait=float(os.environ.get("WORKER_WAIT", "20")),
        alive_file=Path(alive) if alive else None,
    )


async def main() -> int:
    logging.basicConfig(
        level=os.environ.get("WORKER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = worker_from_env()
    log.info("consuming queue %s from %s over %s", worker.queue, worker.urls, worker.transport)
    await worker.run(stop)
    log.info(
        "stopped: %d jobs handled, %d duplicates skipped, %d failed",
        worker.handled,
        worker.skipped,
        worker.failed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

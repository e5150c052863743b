"""Example Herald queue worker: long-poll a queue over HTTP, handle jobs, ack them.

    HERALD_URL=http://localhost:8080 HERALD_API_KEY=... HERALD_QUEUE=jobs \
        python examples/worker.py

It uses only Herald's HTTP queue API (docs/queues.md) and httpx:

    POST /v1/queues/{queue}/receive  {"max": 10, "wait": 20}
        -> {"messages": [{"id", "receipt", "body", "attributes", "receive_count", ...}]}
    POST /v1/queues/{queue}/ack      {"receipts": [...]}        (delete what was handled)
    POST /v1/queues/{queue}/nack     {"receipt", "delay"}       (retry later)

Delivery is at-least-once: a job whose ack is lost (crash, network) is delivered
again once its visibility timeout expires, so `handle` must be idempotent. A job
that keeps failing is nacked with a growing delay until the queue's
`max_receive_count` moves it to its dead-letter queue.

The queue must exist (`PUT /v1/queues/jobs`); until it does, receive answers
404 `queue_not_found` and the worker retries with backoff.

Settings (environment):
    HERALD_URL          gateway base URL (default http://localhost:8080)
    HERALD_API_KEY      API key sent as `Authorization: Bearer ...` (empty: auth off)
    HERALD_QUEUE        queue name (default jobs)
    WORKER_CONCURRENCY  jobs fetched per receive and handled concurrently, 1-100 (default 10)
    WORKER_WAIT         long-poll seconds, 0-20 (default 20)
    WORKER_ALIVE_FILE   touched after every poll, for a liveness probe
                        (default /tmp/worker-alive; empty: off)

SIGTERM/SIGINT: stop polling, finish and ack the jobs in hand, exit 0. That takes
at most the handler's run time, so keep the pod's terminationGracePeriodSeconds
above it (k8s/base/worker-deployment.yaml).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("herald.worker")

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[None]]


async def handle(message: Message) -> None:
    """Do the job. Replace with real work; raise to have the job retried later."""
    log.info(
        "job %s (receive #%s): %s",
        message.get("id"),
        message.get("receive_count"),
        message.get("body"),
    )


class Worker:
    """Receive → handle concurrently → ack the successes, nack the failures."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        queue: str,
        handler: Handler = handle,
        *,
        batch: int = 10,
        wait: float = 20,
        alive_file: Path | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.client = client
        self.queue = queue
        self.handler = handler
        self.batch = max(1, min(100, batch))
        self.wait = max(0.0, min(20.0, wait))
        self.alive_file = alive_file
        self.max_backoff = max_backoff
        self.handled = 0
        self.failed = 0

    def _url(self, action: str) -> str:
        return f"/v1/queues/{self.queue}/{action}"

    async def receive(self) -> list[Message]:
        r = await self.client.post(
            self._url("receive"), json={"max": self.batch, "wait": self.wait}
        )
        r.raise_for_status()
        messages: list[Message] = r.json().get("messages", [])
        return messages

    async def ack(self, receipts: list[str]) -> None:
        if not receipts:
            return
        r = await self.client.post(self._url("ack"), json={"receipts": receipts})
        r.raise_for_status()
        # Per-receipt results: an expired receipt means the job was (or will be)
        # delivered again -- harmless with an idempotent handler, worth a warning.
        body = r.json() if r.content else {}
        results = body.get("results", []) if isinstance(body, dict) else []
        for receipt, res in zip(receipts, results, strict=False):
            if isinstance(res, dict) and res.get("error"):
                log.warning("ack of %s… failed: %s", receipt[:12], res["error"])

    async def nack(self, message: Message) -> None:
        # Back off per attempt: 10 s, 20 s, 40 s ... capped at the 900 s visibility limit.
        attempt = int(message.get("receive_count") or 1)
        delay = min(900, 10 * 2 ** (attempt - 1))
        try:
            r = await self.client.post(
                self._url("nack"), json={"receipt": message["receipt"], "delay": delay}
            )
            r.raise_for_status()
        except httpx.HTTPError as e:
            log.warning(
                "nack of %s failed (%s); it reappears after its visibility timeout",
                message.get("id"),
                describe(e),
            )

    async def process(self, messages: list[Message]) -> None:
        """Handle a batch concurrently, ack the successes in one call, nack the rest."""
        results = await asyncio.gather(*(self.handler(m) for m in messages), return_exceptions=True)
        done: list[str] = []
        failed: list[Message] = []
        for message, result in zip(messages, results, strict=True):
            if isinstance(result, BaseException):
                log.error("job %s failed: %r", message.get("id"), result)
                failed.append(message)
            else:
                done.append(message["receipt"])
        self.handled += len(done)
        self.failed += len(failed)
        await self.ack(done)
        for message in failed:
            await self.nack(message)

    def _alive(self) -> None:
        if self.alive_file is not None:
            self.alive_file.touch()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; jobs already received are always finished."""
        failures = 0
        while not stop.is_set():
            receiving = asyncio.ensure_future(self.receive())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not receiving.done():
                # Stopping during a long poll: nothing was handed to us yet.
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiving
                break
            try:
                messages = receiving.result()
            except (httpx.HTTPError, ValueError) as e:
                failures += 1
                delay = min(self.max_backoff, 0.5 * 2**failures) * random.uniform(0.5, 1.0)
                log.warning("receive failed (%s); retrying in %.1fs", describe(e), delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            failures = 0
            self._alive()
            if messages:
                try:
                    await self.process(messages)
                except httpx.HTTPError as e:
                    # Unacked jobs come back after their visibility timeout.
                    log.warning("ack failed (%s)", describe(e))


def describe(e: BaseException) -> str:
    if isinstance(e, httpx.HTTPStatusError):
        try:
            err = e.response.json().get("error", {})
            return f"{e.response.status_code} {err.get('code')}: {err.get('message')}"
        except ValueError:
            return f"HTTP {e.response.status_code}"
    return f"{type(e).__name__}: {e}"


def client_from_env() -> httpx.AsyncClient:
    key = os.environ.get("HERALD_API_KEY", "")
    wait = float(os.environ.get("WORKER_WAIT", "20"))
    return httpx.AsyncClient(
        base_url=os.environ.get("HERALD_URL", "http://localhost:8080"),
        headers={"Authorization": f"Bearer {key}"} if key else {},
        # The read timeout must outlast the long poll.
        timeout=httpx.Timeout(10.0, read=wait + 15.0),
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
    alive = os.environ.get("WORKER_ALIVE_FILE", "/tmp/worker-alive")
    queue = os.environ.get("HERALD_QUEUE", "jobs")
    async with client_from_env() as client:
        worker = Worker(
            client,
            queue,
            batch=int(os.environ.get("WORKER_CONCURRENCY", "10")),
            wait=float(os.environ.get("WORKER_WAIT", "20")),
            alive_file=Path(alive) if alive else None,
        )
        log.info("consuming queue %s from %s", queue, client.base_url)
        await worker.run(stop)
    log.info("stopped: %d jobs handled, %d failed", worker.handled, worker.failed)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Worker: consume a queue and run each job's handler once, even when Herald delivers it
twice (at-least-once delivery: a crash before the ack, an expired visibility timeout,
or the same work sent twice under one app key).

    worker = Worker("payments", charge, idempotency=SQLiteIdempotency("done.db"),
                    key=lambda job: job.body["order_id"], url="http://herald:8080")
    await worker.run(stop_event)

Per job: claim the key in the idempotency store → `done`: ack without running;
`busy` (another worker has it): nack with a delay; `new`: run the handler, then mark
`done` and ack, or release the claim and nack with backoff if it raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

from herald_client.client import HeraldClient
from herald_client.consumer import Job, default_nack_delay
from herald_client.idempotency import IdempotencyStore

log = logging.getLogger("herald_client.worker")

Handler = Callable[[Job], Awaitable[Any] | Any]


class JobBusy(Exception):
    """Another worker holds this job's key; it is nacked and retried later."""


class Worker:
    """Run `handler` for every job of `queue`, over HTTP long polling or a WebSocket."""

    def __init__(
        self,
        queue: str,
        handler: Handler,
        *,
        idempotency: IdempotencyStore | None = None,
        key: Callable[[Job], str] | None = None,
        url: str | Sequence[str] = "http://127.0.0.1:8080",
        token: str | None = None,
        transport: Literal["http", "ws"] = "http",
        concurrency: int = 10,
        wait: float = 20.0,
        claim_ttl: float = 300.0,
        busy_delay: int = 5,
        alive_file: Path | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.queue = queue
        self.handler = handler
        self.idempotency = idempotency
        self.key = key or (lambda job: job.id)
        self.urls = [url] if isinstance(url, str) else list(url)
        self.token = token
        self.transport = transport
        self.concurrency = max(1, min(100, concurrency))
        self.wait = max(0.0, min(20.0, wait))
        self.claim_ttl = claim_ttl
        self.busy_delay = busy_delay
        self.alive_file = alive_file
        self.max_backoff = max_backoff
        self.handled = 0  # handler ran and returned
        self.skipped = 0  # redelivered after it was done: acked without running
        self.failed = 0

    async def process(self, job: Job) -> None:
        """Run one job through the idempotency store; raise to have it nacked."""
        key = self.key(job)
        if self.idempotency is not None:
            state = await self.idempotency.claim(key, self.claim_ttl)
            if state == "done":
                self.skipped += 1
                log.info("job %s (key %s) already done: acking without running", job.id, key)
                return
            if state == "busy":
                raise JobBusy(key)
        try:
            res = self.handler(job)
            if inspect.isawaitable(res):
                await res
        except BaseException:
            self.failed += 1
            if self.idempotency is not None:
                await self.idempotency.release(key)
            raise
        self.handled += 1
        if self.idempotency is not None:
            await self.idempotency.complete(key)

    def _alive(self) -> None:
        if self.alive_file is not None:
            self.alive_file.touch()

    def nack_delay(self, job: Job, exc: BaseException) -> int:
        if isinstance(exc, JobBusy):
            return self.busy_delay
        return int(default_nack_delay(job.receive_count))

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Work until `stop` is set; jobs in hand are finished (HTTP) before returning."""
        stop = stop or asyncio.Event()
        if self.transport == "ws":
            await self._run_ws(stop)
        else:
            await self._run_http(stop)

    # ---- WebSocket consumer -----------------------------------------------------------

    async def _run_ws(self, stop: asyncio.Event) -> None:
        urls = [_ws_url(u) for u in self.urls]
        async with HeraldClient(urls, token=self.token) as client:

            async def handle(job: Job) -> None:
                self._alive()
                await self.process(job)

            await client.consume(
                self.queue,
                handle,
                prefetch=self.concurrency,
                nack_delay=lambda n: float(default_nack_delay(n)),
            )
            await stop.wait()

    # ---- HTTP long polling ------------------------------------------------------------

    async def _run_http(self, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        timeout = httpx.Timeout(10.0, read=self.wait + 15.0)  # outlast the long poll
        failures = 0
        async with httpx.AsyncClient(
            base_url=self.urls[0], headers=headers, timeout=timeout
        ) as http:
            while not stop.is_set():
                receiving = asyncio.ensure_future(self._receive(http))
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not receiving.done():
                    receiving.cancel()  # nothing handed to us yet
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiving
                    break
                try:
                    jobs = receiving.result()
                except (httpx.HTTPError, ValueError) as e:
                    failures += 1
                    delay = min(self.max_backoff, 0.5 * 2**failures) * random.uniform(0.5, 1)
                    log.warning("receive failed (%s); retrying in %.1fs", _describe(e), delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    continue
                failures = 0
                self._alive()
                if jobs:
                    await self._process_batch(http, jobs)

    async def _receive(self, http: httpx.AsyncClient) -> list[Job]:
        r = await http.post(
            f"/v1/queues/{self.queue}/receive", json={"max": self.concurrency, "wait": self.wait}
        )
        r.raise_for_status()

        async def extend(job: Job, seconds: float) -> None:
            resp = await http.post(
                f"/v1/queues/{self.queue}/visibility",
                json={"receipt": job.receipt, "timeout": seconds},
            )
            resp.raise_for_status()

        return [Job.from_wire(self.queue, m, extend) for m in r.json().get("messages", [])]

    async def _process_batch(self, http: httpx.AsyncClient, jobs: list[Job]) -> None:
        results = await asyncio.gather(*(self.process(j) for j in jobs), return_exceptions=True)
        done = [j.receipt for j, res in zip(jobs, results, strict=True) if res is None]
        try:
            if done:
                r = await http.post(f"/v1/queues/{self.queue}/ack", json={"receipts": done})
                r.raise_for_status()
            for job, res in zip(jobs, results, strict=True):
                if isinstance(res, BaseException):
                    if not isinstance(res, JobBusy):
                        log.error("job %s failed: %r", job.id, res)
                    r = await http.post(
                        f"/v1/queues/{self.queue}/nack",
                        json={"receipt": job.receipt, "delay": self.nack_delay(job, res)},
                    )
                    r.raise_for_status()
        except httpx.HTTPError as e:
            # Unacked jobs come back after their visibility timeout; the store skips them.
            log.warning("ack/nack failed (%s)", _describe(e))


def _ws_url(url: str) -> str:
    if url.startswith(("ws://", "wss://")):
        return url
    return url.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/") + "/ws"


def _describe(e: BaseException) -> str:
    if isinstance(e, httpx.HTTPStatusError):
        try:
            err = e.response.json().get("error", {})
            return f"{e.response.status_code} {err.get('code')}: {err.get('message')}"
        except ValueError:
            return f"HTTP {e.response.status_code}"
    return f"{type(e).__name__}: {e}"

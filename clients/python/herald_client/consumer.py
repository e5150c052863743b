"""WebSocket queue consumer: run a handler per job, ack on success, nack with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from herald_client.errors import HeraldClientError

if TYPE_CHECKING:
    from herald_client.client import HeraldClient

log = logging.getLogger("herald_client")


@dataclass
class Job:
    """One delivery of a queue message. `id` is the message id (stable across
    redeliveries); `receipt` is this delivery's handle."""

    queue: str
    id: str
    receipt: str
    body: Any
    attributes: dict[str, Any]
    receive_count: int
    raw: dict[str, Any] = field(repr=False)
    _extend: Callable[[Job, float], Awaitable[None]] | None = field(default=None, repr=False)

    async def extend(self, visibility_timeout: float) -> None:
        """Keep a long job invisible to others for `visibility_timeout` more seconds."""
        if self._extend is None:
            raise HeraldClientError("this job cannot be extended")
        await self._extend(self, visibility_timeout)

    @classmethod
    def from_wire(
        cls,
        queue: str,
        msg: dict[str, Any],
        extend: Callable[[Job, float], Awaitable[None]],
        id_key: str = "id",
    ) -> Job:
        """A job from a received message: a WebSocket `job` frame (`id_key="msg_id"`)
        or an element of an HTTP receive's `messages`."""
        return cls(
            queue=queue,
            id=str(msg.get(id_key)),
            receipt=str(msg.get("receipt")),
            body=msg.get("body"),
            attributes=msg.get("attributes") or {},
            receive_count=int(msg.get("receive_count") or 1),
            raw=msg,
            _extend=extend,
        )


JobHandler = Callable[[Job], Awaitable[Any] | Any]


def default_nack_delay(receive_count: int) -> float:
    """1 s, 2 s, 4 s … capped at 5 minutes."""
    return float(min(300, 2 ** max(0, receive_count - 1)))


@dataclass(eq=False)
class Consumer:
    """Created by `HeraldClient.consume`; `stop()` ends it."""

    client: HeraldClient
    queue: str
    handler: JobHandler
    prefetch: int
    visibility_timeout: int | None
    nack_delay: Callable[[int], float]
    acked: int = field(default=0, init=False)
    nacked: int = field(default=0, init=False)
    round: int = field(default=0, init=False)
    _running: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def command(self) -> dict[str, Any]:
        cmd: dict[str, Any] = {"op": "consume", "queue": self.queue, "prefetch": self.prefetch}
        if self.visibility_timeout is not None:
            cmd["visibility_timeout"] = self.visibility_timeout
        return cmd

    def on_job(self, frame: dict[str, Any]) -> None:
        job = Job.from_wire(self.queue, frame, self._extend, id_key="msg_id")
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _extend(self, job: Job, visibility_timeout: float) -> None:
        await self.client.request(
            {
                "op": "extend",
                "queue": self.queue,
                "receipt": job.receipt,
                "visibility_timeout": visibility_timeout,
            }
        )

    async def _run(self, job: Job) -> None:
        try:
            res = self.handler(job)
            if inspect.isawaitable(res):
                await res
        except Exception as exc:
            log.warning("job %s failed (%r); nacking", job.id, exc)
            with contextlib.suppress(HeraldClientError, TimeoutError):
                await self.client.request(
                    {
                        "op": "nack",
                        "queue": self.queue,
                        "receipt": job.receipt,
                        "delay": int(self.nack_delay(job.receive_count)),
                    }
                )
                self.nacked += 1
            return
        try:
            reply = await self.client.request(
                {"op": "ack", "queue": self.queue, "receipt": job.receipt}
            )
            failed = [r for r in reply.get("results", ()) if isinstance(r, dict) and "error" in r]
            if failed:
                raise HeraldClientError(str(failed[0]["error"]))
            self.acked += 1
        except (HeraldClientError, TimeoutError) as exc:
            # At-least-once: the job comes back, so handlers must be idempotent.
            log.warning("ack of job %s failed (%s); it will be redelivered", job.id, exc)

    async def stop(self) -> None:
        """Stop taking jobs (reconnects no longer resume this consumer)."""
        self.client._stop_consumer(self)
        for t in list(self._running):
            with contextlib.suppress(Exception):
                await t

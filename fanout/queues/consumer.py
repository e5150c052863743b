"""QueueConsumer: feeds one WebSocket `consume` from a queue (SPEC §4, `job` frames)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from fanout.queues.model import MAX_BATCH, MAX_VISIBILITY_S, MAX_WAIT_S, integer, number
from fanout.queues.service import QueueService
from shared.errors import HeraldError, QueueNotFound

log = logging.getLogger("herald.queues.consumer")

MAX_PREFETCH = 1000


class QueueConsumer:
    """Long-polls `queue` and hands jobs to `send_job`, at most `prefetch` unacked at a time.

    `send_job` gets `{"op": "job", "queue", "receipt", "msg_id", "body", "attributes",
    "receive_count", "sent_at"}` and must not block (the WebSocket edge queues the
    frame). A job stops counting against `prefetch` when it is acked, nacked,
    released with `extend(receipt, 0)`, or when its visibility timeout runs out
    (the queue may then give it to someone else).

    When the queue is deleted, the consumer stops and calls `on_end` with the
    `QueueNotFound` error; it does not retry.

    `close()` releases every unacked job so it is visible again AT ONCE rather than
    after its visibility timeout: the socket that held it is gone and will never
    ack it, so waiting would only delay redelivery. The cost is that a job the
    client finished but had not acked yet runs again — at-least-once, as always.
    """

    def __init__(
        self,
        service: QueueService,
        queue: str,
        prefetch: int,
        visibility_timeout: float | None,
        send_job: Callable[[dict[str, Any]], None],
        on_end: Callable[[HeraldError], None] | None = None,
    ) -> None:
        self.service = service
        self.queue = queue
        self.prefetch = integer(prefetch, "prefetch", 1, MAX_PREFETCH)
        self._vt = (
            None
            if visibility_timeout is None
            else number(visibility_timeout, "visibility_timeout", 0, MAX_VISIBILITY_S)
        )
        self._send_job = send_job
        self._on_end = on_end
        self._outstanding: dict[str, float] = {}  # receipt -> visibility deadline (clock s)
        self._slot_freed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def outstanding(self) -> int:
        """Jobs sent and not yet acked, nacked or expired."""
        return len(self._outstanding)

    def owns(self, receipt: str) -> bool:
        """Whether `receipt` is an unacked job of this consumer (to route WS acks)."""
        return receipt in self._outstanding

    async def start(self) -> None:
        """Check the queue exists (raises `QueueNotFound`) and start consuming."""
        attrs = await self.service.get(self.queue)
        if self._closed:  # closed while we looked (the socket went away)
            return
        if self._vt is None:
            self._vt = attrs["visibility_timeout"]
        self._task = asyncio.create_task(self._run(), name=f"consume:{self.queue}")

    def _free_slots(self) -> int:
        now = self.service.clock()
        for receipt in [r for r, deadline in self._outstanding.items() if deadline <= now]:
            del self._outstanding[receipt]  # its visibility ran out: no longer ours
        return self.prefetch - len(self._outstanding)

    async def _run(self) -> None:
        assert self._vt is not None
        while True:
            free = self._free_slots()
            if free <= 0:
                self._slot_freed.clear()
                # Wake on an ack, or when the earliest job's visibility runs out.
                soonest = min(self._outstanding.values()) - self.service.clock()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(max(soonest, 0.01), 1.0)):
                        await self._slot_freed.wait()
                continue
            try:
                msgs = await self.service.receive(
                    self.queue,
                    max=min(free, MAX_BATCH),
                    wait=MAX_WAIT_S,
                    visibility_timeout=self._vt,
                )
            except QueueNotFound as exc:
                # Deleted under us: retrying would spin forever, so the consumer ends
                # and its owner tells the client (issue 9).
                self._outstanding.clear()
                if self._on_end is not None:
                    self._on_end(exc)
                return
            except HeraldError as exc:
                log.warning("consumer of %s: receive failed (%s); retrying", self.queue, exc)
                await asyncio.sleep(1.0)
                continue
            deadline = self.service.clock() + self._vt
            for m in msgs:
                self._outstanding[m["receipt"]] = deadline
                job = {
                    "op": "job",
                    "queue": self.queue,
                    "receipt": m["receipt"],
                    "msg_id": m["id"],
                    "body": m["body"],
                    "attributes": m["attributes"],
                    "receive_count": m["receive_count"],
                    "sent_at": m["sent_at"],
                }
                try:
                    self._send_job(job)
                except Exception as exc:
                    # A job that cannot be sent (say, a body stored before the nesting
                    # limit that no longer encodes) stays hidden until its visibility
                    # timeout, holding a prefetch slot: releasing it at once made the
                    # consumer spin on it, and its receive count still grows towards
                    # the dead-letter queue.
                    log.warning(
                        "consumer of %s: job %s could not be sent (%s)", self.queue, m["id"], exc
                    )

    def _forget(self, receipts: Sequence[str]) -> None:
        for r in receipts:
            self._outstanding.pop(r, None)
        self._slot_freed.set()

    async def ack(self, receipts: Sequence[str]) -> list[dict[str, Any]]:
        """Delete jobs; per receipt `{"receipt","ok"}` or a `receipt_invalid` error."""
        try:
            return await self.service.ack(self.queue, receipts)
        finally:
            self._forget(receipts)

    async def nack(self, receipt: str, delay: float = 0) -> None:
        """Give a job back, visible again after `delay` seconds."""
        try:
            await self.service.nack(self.queue, receipt, delay)
        finally:
            self._forget([receipt])

    async def extend(
        self,
        receipt: str,
        timeout: float,  # noqa: ASYNC109 - a visibility timeout
    ) -> None:
        """Keep a job hidden `timeout` more seconds from now (0 gives it back)."""
        await self.service.change_visibility(self.queue, receipt, timeout)
        if timeout == 0:
            self._forget([receipt])
        elif receipt in self._outstanding:
            self._outstanding[receipt] = self.service.clock() + timeout

    async def _release(self, receipt: str) -> None:
        with contextlib.suppress(HeraldError):
            await self.service.change_visibility(self.queue, receipt, 0)
        self._forget([receipt])

    async def close(self) -> None:
        """Stop consuming and make every unacked job visible again at once."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for receipt in list(self._outstanding):
            await self._release(receipt)

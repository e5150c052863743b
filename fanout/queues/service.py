"""QueueService: the durable queue API every store implements (SPEC §5, "Queues").

The base class holds what does not depend on the store: argument validation,
long polling, topic→queue subscription matching and the release of messages a
cancelled receive had already claimed. A store implements the `_`-prefixed steps,
each of which is one atomic step in the store (a SQLite transaction or a Lua script).
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from fanout.index import SubscriptionIndex
from fanout.message import Message
from fanout.queues.model import (
    MAX_BATCH,
    MAX_VISIBILITY_S,
    MAX_WAIT_S,
    Entry,
    QueueAttrs,
    integer,
    is_fifo_name,
    merge_attrs,
    new_message_id,
    number,
    prepare_entry,
    receipt_error,
    split_receipt,
    validate_name,
)
from shared.errors import (
    HeraldError,
    InvalidRequest,
    NotFound,
    QueueNotFound,
    ReceiptInvalid,
)
from shared.filters import FilterPolicy, compile_filter
from shared.topics import validate_pattern

log = logging.getLogger("herald.queues")

Clock = Callable[[], float]

# A waiting receive re-checks the store at least this often (real seconds). Sends
# wake it at once and it sleeps only until the next delayed or in-flight message
# falls due; the tick covers what neither sees: a wake-up lost while Redis
# reconnects, another process's clock, or a clock a test moves by hand.
POLL_TICK_S = 0.5
HOUSEKEEP_S = 5.0


@dataclass(frozen=True, slots=True)
class QueueSubscription:
    """A topic→queue subscription (`POST /v1/subscriptions`)."""

    id: str
    topic: str
    queue: str
    filter_policy: dict[str, Any] | None
    created_at: int  # Unix ms

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class QueueService(abc.ABC):
    """Durable SQS-style queues plus SNS-style topic→queue subscriptions.

    All methods are coroutines and raise `HeraldError`s only. Times come from the
    injected `clock` (Unix seconds) so tests can drive visibility, delays,
    retention and the dedup window without sleeping.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._events: dict[str, asyncio.Event] = {}
        self._subs: dict[str, tuple[QueueSubscription, FilterPolicy]] = {}
        self._sub_index: SubscriptionIndex[str] = SubscriptionIndex()
        self._housekeeper: asyncio.Task[None] | None = None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ---- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, load subscriptions and start periodic housekeeping."""
        await self._open()
        self._install_subscriptions(await self._load_subscriptions())
        self._housekeeper = asyncio.create_task(self._housekeep_forever())

    async def close(self) -> None:
        """Stop background work and close the store; waiting receives return empty."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
            self._housekeeper = None
        await self._close()

    async def _housekeep_forever(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEP_S)
            try:
                await self._housekeep()
            except Exception:  # keep sweeping: one failed pass must not end them all
                log.exception("queue housekeeping failed")

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Whether the store answers."""

    # ---- queues ---------------------------------------------------------------

    async def create_or_update(self, name: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Create a queue, or change the given attributes of an existing one."""
        validate_name(name)
        existing = await self._load_attrs(name)
        merged = merge_attrs(name, existing, attrs, self.now_ms())
        if merged.dead_letter is not None:
            await self._check_dead_letter_chain(name, merged.dead_letter.queue)
        await self._save_attrs(merged)
        return merged.as_dict()

    async def _check_dead_letter_chain(self, name: str, dlq: str) -> None:
        """The DLQ must exist, and following dead-letter targets from it must not lead
        back to `name`: a cycle would bounce a failing message between queues forever."""
        chain = [name]
        target: str | None = dlq
        while target is not None and target not in chain:
            attrs = await self._load_attrs(target)
            if attrs is None:
                if target == dlq:
                    raise InvalidRequest(
                        f"dead-letter queue {dlq!r} does not exist", details={"queue": dlq}
                    )
                break  # a later link was deleted: the chain ends there
            chain.append(target)
            target = attrs.dead_letter.queue if attrs.dead_letter else None
        if target == name:
            raise InvalidRequest(
                "dead-letter queues would form a cycle: " + " -> ".join([*chain, name]),
                details={"cycle": [*chain, name]},
            )

    async def get(self, name: str) -> dict[str, Any]:
        """Attributes and stats of one queue."""
        return await self._get(validate_name(name))

    async def list_queues(self) -> list[dict[str, Any]]:
        """Attributes and stats of every queue, by name."""
        return await self._list()

    async def delete(self, name: str) -> None:
        """Delete a queue, its messages and the subscriptions that feed it."""
        await self._delete(validate_name(name))
        self._wake(name)  # waiting receives (consumers) see it is gone at once
        for sub, _ in list(self._subs.values()):
            if sub.queue == name:
                await self._delete_subscription(sub.id)
        self._install_subscriptions(await self._load_subscriptions())

    async def purge(self, name: str) -> int:
        """Delete every message of a queue (in flight too); returns how many."""
        return await self._purge(validate_name(name))

    async def stats(self) -> dict[str, dict[str, Any]]:
        """Stats of every queue by name (for `/metrics`)."""
        return await self._all_stats()

    # ---- messages -------------------------------------------------------------

    async def send(self, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Enqueue one message; returns `{"id"}` (the first id for a duplicate)."""
        validate_name(name)
        result = (await self._send(name, [prepare_entry(name, entry)]))[0]
        if "error" in result:
            raise result["error"]
        return {"id": result["id"]}

    async def send_batch(
        self, name: str, entries: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Enqueue up to 100 messages; per entry `{"id"}` or `{"error"}`."""
        validate_name(name)
        if not isinstance(entries, Sequence) or not 1 <= len(entries) <= MAX_BATCH:
            raise InvalidRequest(f"a batch holds 1 to {MAX_BATCH} entries")
        results: list[dict[str, Any]] = [{} for _ in entries]
        valid: list[Entry] = []
        slots: list[int] = []
        for i, raw in enumerate(entries):
            try:
                valid.append(prepare_entry(name, raw))
                slots.append(i)
            except HeraldError as exc:
                results[i] = {"error": exc.to_dict()}
        if valid:
            for slot, res in zip(slots, await self._send(name, valid), strict=True):
                err = res.get("error")
                results[slot] = {"error": err.to_dict()} if err else {"id": res["id"]}
        return results

    async def receive(
        self,
        name: str,
        max: int = 1,  # the wire name (SPEC §5), hence builtins.max below
        wait: float = 0,
        visibility_timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """Claim up to `max` visible messages, long-polling up to `wait` seconds.

        Returns as soon as a message is available: a send in this process sets the
        queue's event; stores with other writers also wake it (Redis pub/sub).
        """
        validate_name(name)
        count = integer(max, "max", 1, MAX_BATCH)
        wait_s = number(wait, "wait", 0, MAX_WAIT_S)
        vt = (
            None
            if visibility_timeout is None
            else number(visibility_timeout, "visibility_timeout", 0, MAX_VISIBILITY_S)
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            # Take the event before looking, so a send racing with the look still wakes us.
            event = self._events.setdefault(name, asyncio.Event())
            remaining = deadline - loop.time()
            msgs, next_due = await self._claim(name, count, vt, builtins.max(remaining, 0.0))
            remaining = deadline - loop.time()
            if msgs or remaining <= 0:
                return msgs
            timeout = min(remaining, POLL_TICK_S)
            if next_due is not None:
                timeout = min(timeout, builtins.max(next_due - self.clock(), 0.001))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()

    async def _claim(
        self, name: str, count: int, vt: float | None, wait_s: float
    ) -> tuple[list[dict[str, Any]], float | None]:
        # The store step runs to completion even if our caller is cancelled (a client
        # went away): what it claimed is released at once instead of staying hidden
        # for a whole visibility timeout.
        task = asyncio.ensure_future(self._receive_once(name, count, vt, wait_s))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                msgs, _ = await task
                for m in msgs:
                    await self.change_visibility(name, m["receipt"], 0)
            raise

    def _wake(self, name: str) -> None:
        """Wake every receive waiting on `name` in this process."""
        event = self._events.pop(name, None)
        if event is not None:
            event.set()

    async def ack(self, name: str, receipts: Sequence[str]) -> list[dict[str, Any]]:
        """Delete messages by receipt; per receipt `{"receipt","ok"}` or `receipt_invalid`."""
        validate_name(name)
        if isinstance(receipts, str) or not 1 <= len(receipts) <= MAX_BATCH:
            raise InvalidRequest(f"'receipts' must list 1 to {MAX_BATCH} receipts")
        results: list[dict[str, Any]] = []
        pairs: list[tuple[str, str]] = []
        slots: list[int] = []
        for r in receipts:
            try:
                pairs.append(split_receipt(r))
                slots.append(len(results))
                results.append({"receipt": r, "ok": True})
            except ReceiptInvalid as exc:
                results.append(receipt_error(str(r), exc.message))
        if pairs:
            oks = await self._ack(name, pairs)
            for slot, ok in zip(slots, oks, strict=True):
                if not ok:
                    results[slot] = receipt_error(results[slot]["receipt"])
        return results

    async def nack(self, name: str, receipt: str, delay: float = 0) -> None:
        """Give a message back: visible again after `delay` seconds (0 = now)."""
        validate_name(name)
        msg_id, token = split_receipt(receipt)
        d = number(delay, "delay", 0, MAX_VISIBILITY_S)
        await self._change_visibility(name, msg_id, token, d, release=True)

    async def change_visibility(
        self,
        name: str,
        receipt: str,
        timeout: float,  # noqa: ASYNC109 - visibility, SPEC §5
    ) -> None:
        """Keep an in-flight message hidden `timeout` s from now; 0 releases it now."""
        validate_name(name)
        msg_id, token = split_receipt(receipt)
        t = number(timeout, "timeout", 0, MAX_VISIBILITY_S)
        await self._change_visibility(name, msg_id, token, t, release=t == 0)

    async def redrive(self, dlq_name: str) -> int:
        """Move dead-lettered messages back to their source queues; returns how many."""
        return await self._redrive(validate_name(dlq_name))

    # ---- topic → queue subscriptions ------------------------------------------------

    async def create_subscription(
        self, topic_pattern: str, queue: str, filter_policy: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Subscribe `queue` to topics matching `topic_pattern` (idempotent)."""
        pattern = validate_pattern(topic_pattern)
        validate_name(queue)
        flt = compile_filter(filter_policy)
        if await self._load_attrs(queue) is None:
            raise QueueNotFound(f"queue {queue!r} does not exist", details={"queue": queue})
        self._install_subscriptions(await self._load_subscriptions())
        for sub, other in self._subs.values():
            if sub.topic == pattern and sub.queue == queue and other.canonical == flt.canonical:
                return sub.as_dict()
        policy = dict(filter_policy) if filter_policy else None
        sub = QueueSubscription(
            "sub_" + secrets.token_hex(8), pattern, queue, policy, self.now_ms()
        )
        await self._save_subscription(sub)
        self._install_subscriptions(await self._load_subscriptions())
        return sub.as_dict()

    async def list_subscriptions(self) -> list[dict[str, Any]]:
        subs = await self._load_subscriptions()
        self._install_subscriptions(subs)
        return [s.as_dict() for s in sorted(subs, key=lambda s: (s.created_at, s.id))]

    async def delete_subscription(self, sub_id: str) -> None:
        if not await self._delete_subscription(sub_id):
            raise NotFound(
                f"subscription {sub_id!r} does not exist",
                code="subscription_not_found",
                details={"id": sub_id},
            )
        self._install_subscriptions(await self._load_subscriptions())

    def _install_subscriptions(self, subs: list[QueueSubscription]) -> None:
        index: SubscriptionIndex[str] = SubscriptionIndex()
        table: dict[str, tuple[QueueSubscription, FilterPolicy]] = {}
        for sub in subs:
            try:
                table[sub.id] = (sub, compile_filter(sub.filter_policy))
            except HeraldError:  # stored by a newer version with operators we lack
                log.error("ignoring subscription %s: its filter no longer compiles", sub.id)
                continue
            index.add(sub.topic, sub.id)
        self._subs, self._sub_index = table, index

    async def on_publish(self, msgs: Sequence[Message]) -> None:
        """Durably enqueue published messages on every matching subscribed queue.

        Called before a publish is acknowledged. Each (message, queue) pair is
        enqueued atomically; when a queue refuses (full, too large) the others are
        still written and the first refusal is raised, so the publisher retries
        (at-least-once: other queues may then see that message twice).
        """
        if not self._subs:
            return
        by_queue: dict[str, list[Entry]] = {}
        for msg in msgs:
            queues: dict[str, None] = {}
            for sid in self._sub_index.match(msg.topic):
                sub, flt = self._subs[sid]
                if sub.queue not in queues and flt.matches(msg.attributes):
                    queues[sub.queue] = None
            if not queues:
                continue
            payload = orjson.dumps(
                {"body": orjson.Fragment(msg.envelope), "attributes": msg.attributes}
            )
            for q in queues:
                fifo = is_fifo_name(q)
                # FIFO queues keep topic order per topic, and drop a re-publish of the
                # same message id within the dedup window.
                by_queue.setdefault(q, []).append(
                    Entry(
                        new_message_id(),
                        payload,
                        0,
                        None,
                        msg.topic if fifo else None,
                        msg.id if fifo else None,
                        None,
                    )
                )
        if by_queue:
            errors = await self._enqueue(by_queue)
            if errors:
                raise errors[0]

    # ---- the store's atomic steps --------------------------------------------------

    @abc.abstractmethod
    async def _open(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _housekeep(self) -> None:
        """Expire messages and dedup ids, finish interrupted moves."""

    @abc.abstractmethod
    async def _load_attrs(self, name: str) -> QueueAttrs | None: ...

    @abc.abstractmethod
    async def _save_attrs(self, attrs: QueueAttrs) -> None: ...

    @abc.abstractmethod
    async def _get(self, name: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def _list(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def _delete(self, name: str) -> None: ...

    @abc.abstractmethod
    async def _purge(self, name: str) -> int: ...

    @abc.abstractmethod
    async def _all_stats(self) -> dict[str, dict[str, Any]]: ...

    @abc.abstractmethod
    async def _send(self, name: str, entries: list[Entry]) -> list[dict[str, Any]]:
        """Per entry `{"id"}` or `{"error": HeraldError}`; QueueNotFound for the queue."""

    @abc.abstractmethod
    async def _enqueue(self, by_queue: dict[str, list[Entry]]) -> list[HeraldError]:
        """Fan-out writes; a missing queue is skipped, refusals are returned."""

    @abc.abstractmethod
    async def _receive_once(
        self, name: str, count: int, vt: float | None, wait_s: float
    ) -> tuple[list[dict[str, Any]], float | None]:
        """Claim messages now; also the clock time the next hidden one falls due."""

    @abc.abstractmethod
    async def _ack(self, name: str, pairs: list[tuple[str, str]]) -> list[bool]: ...

    @abc.abstractmethod
    async def _change_visibility(
        self, name: str, msg_id: str, token: str, seconds: float, *, release: bool
    ) -> None: ...

    @abc.abstractmethod
    async def _redrive(self, dlq: str) -> int: ...

    @abc.abstractmethod
    async def _load_subscriptions(self) -> list[QueueSubscription]: ...

    @abc.abstractmethod
    async def _save_subscription(self, sub: QueueSubscription) -> None: ...

    @abc.abstractmethod
    async def _delete_subscription(self, sub_id: str) -> bool: ...

"""QueueService: the durable queue API every store implements (docs/queues.md).

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
import dataclasses
import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from pydantic import ValidationError

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
from fanout.queues.sns_delivery import SnsMessage, sns_delivery
from fanout.queues.webhook_policy import secret_hash, webhook_settings
from shared.config import HistoryRule
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
    # Webhook subscriptions: endpoint, delivery_policy, raw, secret, dead_letter,
    # confirmed, token. `queue` is then the internal `_webhook-<id>` queue that holds
    # the messages until they are delivered (durable on both engines).
    webhook: dict[str, Any] | None = None
    # Set by the SNS API (gateway/aws): deliver the SNS envelope, see sns_delivery.
    options: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The stored form (with the secret)."""
        out = asdict(self)
        if out["options"] is None:  # native subscriptions keep their documented shape
            del out["options"]
        return out

    def public(self) -> dict[str, Any]:
        """The API form: webhook fields flattened, the secret and token left out."""
        out: dict[str, Any] = {
            "id": self.id,
            "topic": self.topic,
            "queue": self.queue,
            "filter_policy": self.filter_policy,
            "created_at": self.created_at,
        }
        if self.webhook is not None:
            hook = self.webhook
            out["queue"] = None
            out |= {k: hook.get(k) for k in ("endpoint", "delivery_policy", "raw", "dead_letter")}
            out["status"] = "confirmed" if hook.get("confirmed", True) else "pending_confirmation"
            out["secret_hash"] = secret_hash(hook["secret"])
        if self.options is not None:
            out["options"] = self.options
        return out


def subscription_id(pattern: str, target: str, canonical_filter: str) -> str:
    """The id of a subscription, derived from what identifies it.

    Gateways that declare the same subscription at once (HERALD_RESOURCES on every
    pod of a rollout) then write one record, not two that would both deliver.
    """
    digest = hashlib.sha256(f"{pattern}\0{target}\0{canonical_filter}".encode())
    return "sub_" + digest.hexdigest()[:16]


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
        # Fan-out copies a subscribed queue refused (full, too large), by queue.
        self.fanout_refused: dict[str, int] = {}

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
        max: int = 1,  # the wire name (docs/queues.md), hence builtins.max below
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
        timeout: float,  # noqa: ASYNC109 - visibility, docs/queues.md
    ) -> None:
        """Keep an in-flight message hidden `timeout` s from now; 0 releases it now."""
        validate_name(name)
        msg_id, token = split_receipt(receipt)
        t = number(timeout, "timeout", 0, MAX_VISIBILITY_S)
        await self._change_visibility(name, msg_id, token, t, release=t == 0)

    async def peek(self, name: str, limit: int = 10) -> list[dict[str, Any]]:
        """The oldest messages of a queue, in flight or not, without receiving them.

        Read-only: no receive count, visibility or receipt changes (for consoles).
        """
        validate_name(name)
        return await self._peek(name, integer(limit, "max", 1, MAX_BATCH))

    async def redrive(self, dlq_name: str) -> int:
        """Move dead-lettered messages back to their source queues; returns how many."""
        return await self._redrive(validate_name(dlq_name))

    # ---- topic → queue subscriptions ------------------------------------------------

    async def create_subscription(
        self,
        topic_pattern: str,
        queue: str,
        filter_policy: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Subscribe `queue` to topics matching `topic_pattern` (idempotent).

        `options` (SNS API only) makes it deliver SNS envelopes, see `sns_delivery`.
        """
        pattern = validate_pattern(topic_pattern)
        validate_name(queue)
        flt = compile_filter(filter_policy)
        if await self._load_attrs(queue) is None:
            raise QueueNotFound(f"queue {queue!r} does not exist", details={"queue": queue})
        self._install_subscriptions(await self._load_subscriptions())
        for sub, other in self._subs.values():
            if (
                sub.topic == pattern
                and sub.queue == queue
                and other.canonical == flt.canonical
                and (sub.options is None) == (options is None)
            ):
                return sub.public()
        policy = dict(filter_policy) if filter_policy else None
        # An SNS subscription and a native one on the same queue are two subscriptions.
        target = queue if options is None else "sns:" + queue
        sub = QueueSubscription(
            subscription_id(pattern, target, flt.canonical),
            pattern,
            queue,
            policy,
            self.now_ms(),
            options=dict(options) if options is not None else None,
        )
        await self._save_subscription(sub)
        self._install_subscriptions(await self._load_subscriptions())
        return sub.public()

    async def create_webhook_subscription(
        self,
        topic_pattern: str,
        endpoint: str,
        filter_policy: Mapping[str, Any] | None,
        *,
        delivery_policy: Mapping[str, Any] | None = None,
        raw: bool = False,
        secret: str | None = None,
        dead_letter: Mapping[str, Any] | None = None,
        confirm: bool = False,
    ) -> dict[str, Any]:
        """Subscribe an HTTP(S) endpoint; the same (topic, endpoint, filter) is updated.

        Returns the API form, plus `secret` (generated when not given) and, when
        confirmation is required, the `token` the endpoint must echo back.
        """
        pattern = validate_pattern(topic_pattern)
        flt = compile_filter(filter_policy)
        hook = webhook_settings(endpoint, delivery_policy, raw, secret, dead_letter)
        if hook["dead_letter"] is not None:
            dlq = hook["dead_letter"]["queue"]
            if await self._load_attrs(dlq) is None:
                raise QueueNotFound(f"queue {dlq!r} does not exist", details={"queue": dlq})
        self._install_subscriptions(await self._load_subscriptions())
        existing = next(
            (
                sub
                for sub, other in self._subs.values()
                if sub.webhook is not None
                and sub.topic == pattern
                and sub.webhook["endpoint"] == hook["endpoint"]
                and other.canonical == flt.canonical
            ),
            None,
        )
        if existing is not None and existing.webhook is not None:
            old = existing.webhook
            hook["secret"] = secret or old["secret"]
            hook["confirmed"], hook["token"] = old.get("confirmed", True), old.get("token")
            sub = QueueSubscription(
                existing.id, pattern, existing.queue, existing.filter_policy,
                existing.created_at, hook,
            )  # fmt: skip
        else:
            sub_id = subscription_id(pattern, hook["endpoint"], flt.canonical)
            hook["confirmed"] = not confirm
            hook["token"] = secrets.token_urlsafe(24) if confirm else None
            queue = f"_webhook-{sub_id}"
            # Visibility covers one bounded attempt; a crashed gateway's message
            # comes back after it and is delivered by another.
            await self.create_or_update(queue, {"visibility_timeout": 120})
            policy = dict(filter_policy) if filter_policy else None
            sub = QueueSubscription(sub_id, pattern, queue, policy, self.now_ms(), hook)
        if existing is None or existing.webhook != hook:
            await self._save_subscription(sub)  # an upsert: never absent
        self._install_subscriptions(await self._load_subscriptions())
        out = sub.public() | {"secret": hook["secret"]}
        if not hook["confirmed"]:
            out["token"] = hook["token"]
        return out

    async def confirm_subscription(self, sub_id: str, token: str) -> dict[str, Any]:
        """Confirm a webhook subscription with the token it was sent (SNS-style)."""
        sub = await self.get_subscription(sub_id)
        hook = sub.webhook
        if hook is None or not hook.get("token") or not isinstance(token, str):
            raise InvalidRequest("this subscription needs no confirmation")
        if not secrets.compare_digest(hook["token"], token):
            raise InvalidRequest("wrong confirmation token", code="invalid_token")
        if not hook.get("confirmed"):
            # replace(): an SNS subscription keeps its options.
            confirmed = dataclasses.replace(sub, webhook=hook | {"confirmed": True})
            await self._save_subscription(confirmed)
            self._install_subscriptions(await self._load_subscriptions())
            sub = confirmed
        return sub.public()

    async def get_subscription(self, sub_id: str) -> QueueSubscription:
        for sub in await self._load_subscriptions():
            if sub.id == sub_id:
                return sub
        raise NotFound(
            f"subscription {sub_id!r} does not exist",
            code="subscription_not_found",
            details={"id": sub_id},
        )

    async def webhook_subscriptions(self) -> list[QueueSubscription]:
        """Every webhook subscription, as stored (with secrets), for the delivery loop."""
        subs = await self._load_subscriptions()
        self._install_subscriptions(subs)
        return [s for s in subs if s.webhook is not None]

    # ---- history rules (declared at runtime, shared by every gateway) ----------------

    async def history_rules(self) -> list[dict[str, Any]]:
        """The declared history rules, in match order (`herald apply`)."""
        raw = await self._load_meta("history_rules")
        rules: list[dict[str, Any]] = orjson.loads(raw) if raw else []
        return rules

    async def set_history_rules(self, rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Replace the declared history rules (validated as `HERALD_HISTORY` rules)."""
        try:
            valid = [HistoryRule.model_validate(r).model_dump() for r in rules]
        except ValidationError as exc:
            raise InvalidRequest(f"invalid history rule: {exc.errors()[0]['msg']}") from None
        await self._save_meta("history_rules", orjson.dumps(valid))
        return valid

    async def list_subscriptions(self) -> list[dict[str, Any]]:
        subs = await self._load_subscriptions()
        self._install_subscriptions(subs)
        return [s.public() for s in sorted(subs, key=lambda s: (s.created_at, s.id))]

    async def update_subscription(
        self,
        sub_id: str,
        filter_policy: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Replace the filter policy and options of a subscription."""
        compile_filter(filter_policy)
        for sub in await self._load_subscriptions():
            if sub.id == sub_id:
                new = dataclasses.replace(
                    sub,
                    filter_policy=dict(filter_policy) if filter_policy else None,
                    options=dict(options) if options is not None else None,
                )
                await self._save_subscription(new)  # an upsert in every store
                self._install_subscriptions(await self._load_subscriptions())
                return new.public()
        raise NotFound(
            f"subscription {sub_id!r} does not exist",
            code="subscription_not_found",
            details={"id": sub_id},
        )

    async def delete_subscription(self, sub_id: str) -> None:
        sub = await self.get_subscription(sub_id)
        await self._delete_subscription(sub_id)
        if sub.webhook is not None:
            with contextlib.suppress(QueueNotFound):
                await self._delete(sub.queue)
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

    @property
    def subscribed(self) -> bool:
        """True when some queue subscribes to topics (else `on_publish` has nothing to do)."""
        return bool(self._subs)

    async def on_publish(self, msgs: Sequence[Message]) -> None:
        """Durably enqueue published messages on every matching subscribed queue.

        Called before a publish is acknowledged. Each (message, queue) pair is
        enqueued atomically. A queue that refuses (full, too large) is that
        subscription's problem, not the publisher's: it is counted in
        `fanout_refused` (and logged), the others are written, and nothing is
        raised, so a publisher never retries into duplicates. Only a store failure
        raises (the message was not accepted).
        """
        if not self._subs:
            return
        by_queue: dict[str, list[Entry]] = {}
        for msg in msgs:
            # None: the native payload; else an SNS delivery (payload, group, dedup).
            queues: dict[str, tuple[bytes, str | None, str | None] | None] = {}
            sns: SnsMessage | None = None  # decoded on the first SNS subscription only
            for sid in self._sub_index.match(msg.topic):
                sub, flt = self._subs[sid]
                if sub.webhook is not None and not sub.webhook.get("confirmed", True):
                    continue  # SNS: a pending subscription receives nothing
                if sub.queue in queues:
                    continue
                if sub.options is not None:
                    sns = sns or SnsMessage(msg)
                    delivery = sns_delivery(sns, sub.options, flt)
                    if delivery is not None:
                        queues[sub.queue] = delivery
                elif flt.matches(msg.attributes):
                    queues[sub.queue] = None
            if not queues:
                continue
            payload = orjson.dumps(
                {"body": orjson.Fragment(msg.envelope), "attributes": msg.attributes}
            )
            for q, delivery in queues.items():
                fifo = is_fifo_name(q)
                if delivery is not None:
                    sns_payload, group, dedup = delivery
                    by_queue.setdefault(q, []).append(
                        Entry(
                            new_message_id(),
                            sns_payload,
                            0,
                            None,
                            (group or msg.topic) if fifo else None,
                            (dedup or msg.id) if fifo else None,
                            None,
                        )
                    )
                    continue
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
            for queue, err in await self._enqueue(by_queue):
                self.fanout_refused[queue] = self.fanout_refused.get(queue, 0) + 1
                log.warning("fanout to queue %s refused: %s", queue, err.code)

    # ---- SNS topics ------------------------------------------------------------------
    # Herald topics need no creation; the SNS API's CreateTopic/ListTopics do, so the
    # store keeps a registry of those topics and their attributes.

    async def sns_topics(self) -> dict[str, dict[str, Any]]:
        """Topics created through the SNS API: name -> attributes."""
        return await self._load_sns_topics()

    async def put_sns_topic(self, name: str, attrs: Mapping[str, Any]) -> None:
        await self._save_sns_topic(name, attrs)

    async def delete_sns_topic(self, name: str) -> bool:
        return await self._delete_sns_topic(name)

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
    async def _enqueue(self, by_queue: dict[str, list[Entry]]) -> list[tuple[str, HeraldError]]:
        """Fan-out writes; a missing queue is skipped, refusals come back as (queue, error)."""

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
    async def _peek(self, name: str, count: int) -> list[dict[str, Any]]:
        """`{id, body, attributes, receive_count, sent_at, source}`, oldest first."""

    @abc.abstractmethod
    async def _load_meta(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def _save_meta(self, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    async def _load_subscriptions(self) -> list[QueueSubscription]: ...

    @abc.abstractmethod
    async def _save_subscription(self, sub: QueueSubscription) -> None: ...

    @abc.abstractmethod
    async def _delete_subscription(self, sub_id: str) -> bool: ...

    @abc.abstractmethod
    async def _load_sns_topics(self) -> dict[str, dict[str, Any]]: ...

    @abc.abstractmethod
    async def _save_sns_topic(self, name: str, attrs: Mapping[str, Any]) -> None: ...

    @abc.abstractmethod
    async def _delete_sns_topic(self, name: str) -> bool: ...

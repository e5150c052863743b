"""The Node: one gateway process's engine, wiring the hub to a backplane.

It owns the event-loop side of the sans-I/O hub (when to flush), validates and
publishes messages, and serves history and resume. It knows no sockets: the
WebSocket edge hands it `Sink`s, the HTTP edge hands it dicts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fanout.backplane import Backplane, HistoryPage, PublishItem, PublishOutcome
from fanout.hub import Hub, Shape, Sink
from fanout.message import Message
from fanout.presence import Presence
from shared.auth import Authenticator, Principal
from shared.config import HistoryRule, Settings
from shared.errors import HeraldError, InvalidRequest, PayloadTooLarge
from shared.filters import compile_filter
from shared.jsonvalue import check_fields
from shared.topics import is_wildcard, validate_pattern, validate_topic

if TYPE_CHECKING:
    from fanout.queues import QueueService

log = logging.getLogger("herald.node")

MAX_ID_LEN = 128
MAX_HISTORY_LIMIT = 10_000
# Offsets are exact in every client's JSON numbers (JavaScript's too) up to 2**53 - 1;
# a larger `since` can only be a mistake, and Redis would refuse it as a 503.
MAX_OFFSET = 2**53 - 1
# Topics published to lately -> their history rule (None: none); emptied when it fills
# up, and when `settings.history` is replaced.
_TOPIC_CACHE = 10_000
_UNKNOWN: Any = object()


@dataclass(slots=True)
class Resume:
    """What a `subscribe` with `since` asked for and what history could give."""

    recovered: bool
    epoch: str
    offset: int
    messages: list[Message]
    # True when `messages` is only the first page: the sink still catches up, and the
    # caller asks for the rest with `Node.resume_more`.
    more: bool = False


class Node:
    """Engine of one gateway process (hub + backplane + queues)."""

    def __init__(
        self,
        settings: Settings,
        backplane: Backplane,
        *,
        queues: QueueService | None = None,
    ) -> None:
        self.settings = settings
        self.backplane = backplane
        self.queues = queues
        # The gateway's webhook dispatcher (gateway/webhooks.py), when queues are on.
        self.webhooks: Any = None
        self.auth = Authenticator(
            jwt_secret=settings.jwt_secret,
            jwt_public_key=settings.jwt_public_key,
            api_keys=settings.api_keys,
        )
        self.hub = Hub(
            send_buffer_bytes=settings.send_buffer_bytes,
            slow_policy=settings.slow_consumer,
            max_frame_bytes=settings.max_frame_bytes,
            max_filter_cost=settings.max_filter_cost,
            max_filter_cost_per_sink=settings.max_filter_cost_per_connection,
            on_wakeup=self._wakeup,
            on_interest=self._on_interest,
        )
        # Set by the WebSocket edge: the node sees subscriptions, not sockets.
        self.connection_count: Callable[[], int] = lambda: 0
        self.presence = Presence(self.hub, backplane, self.counters)
        self.draining = False
        self.published_total = 0
        self._id_prefix = secrets.token_hex(5)
        self._ids = itertools.count(1)
        self._topics: dict[str, HistoryRule | None] = {}
        self._topic_rules = settings.history  # the rules `_topics` was filled under
        self._loop: asyncio.AbstractEventLoop | None = None
        self._immediate_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._lag_task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.backplane.attach(self.settings.history_rule, self.hub.mark_lagged)
        await self.backplane.start(self._deliver)
        if self.queues is not None:
            await self.queues.start()
        self._lag_task = asyncio.create_task(self._lag_notices())
        await self.presence.start()
        if not self.auth.enabled:
            log.warning(
                "AUTH IS DISABLED: no HERALD_JWT_SECRET, HERALD_JWT_PUBLIC_KEY or "
                "HERALD_API_KEYS is set, so anyone can subscribe and publish (dev mode)"
            )

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        await self.presence.stop()
        if self.queues is not None:
            await self.queues.close()
        await self.backplane.close()

    def ready(self) -> bool:
        return not self.draining and self.backplane.ready()

    async def _lag_notices(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.hub.send_lagged_notices()

    # ---- flush scheduling (the I/O half of the sans-I/O hub) -------------------

    def now(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else time.monotonic()

    def _deliver(self, msgs: list[Message]) -> None:
        self.hub.dispatch_many(msgs, self.now())

    def _wakeup(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self.hub.has_immediate and not self._immediate_scheduled:
            self._immediate_scheduled = True
            loop.call_soon(self._flush_immediate)
        deadline = self.hub.next_deadline()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = loop.call_at(deadline, self._on_timer)

    def _flush_immediate(self) -> None:
        self._immediate_scheduled = False
        self.hub.flush_immediate()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.hub.flush_due(self.now())
        self._wakeup()

    def _on_interest(self, pattern: str, added: bool) -> None:
        if added:
            self.backplane.watch(pattern)
        else:
            self.backplane.unwatch(pattern)

    # ---- publish ------------------------------------------------------------------

    def new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def prepare(
        self, entry: Mapping[str, Any], principal: Principal, *, values_checked: bool = False
    ) -> PublishItem:
        """Validate one publish input (docs/protocol.md, Messages) and encode its envelope once.

        `values_checked`: the caller ran `check_fields(entry)` already (an HTTP body).
        """
        if type(entry) is not dict and not isinstance(entry, Mapping):  # ABC check: slow
            raise InvalidRequest("a message must be a JSON object")
        if not values_checked:
            check_fields(entry)  # encodable, finite, at most MAX_DEPTH deep: deliverable
        topic: Any = entry.get("topic")
        # A topic seen before skips the regex and the history rules' walk.
        topics = self._topics
        rules = self.settings.history
        if rules is not self._topic_rules:  # replaced at runtime (gateway/apply.py)
            topics.clear()
            self._topic_rules = rules
        rule = topics.get(topic, _UNKNOWN) if type(topic) is str else _UNKNOWN
        if rule is _UNKNOWN:
            topic = validate_topic(topic)
            rule = self.settings.history_rule(topic)
            if len(topics) >= _TOPIC_CACHE:
                topics.clear()
            topics[topic] = rule
        principal.check_publish(topic)
        attributes = entry.get("attributes") or {}
        if attributes:
            _check_attributes(attributes)
        given = entry.get("id")
        if given is not None and (not isinstance(given, str) or not 0 < len(given) <= MAX_ID_LEN):
            raise InvalidRequest(f"'id' must be a string of 1-{MAX_ID_LEN} characters")
        msg_id = given or self.new_id()
        try:
            msg = Message.build(
                topic, msg_id, int(time.time() * 1000), entry.get("data"), attributes
            )
        except TypeError as exc:  # orjson: integers over 64 bits and the like
            raise InvalidRequest(f"data cannot be encoded: {exc}") from None
        limit = self.settings.max_message_bytes
        if len(msg.envelope) > limit:
            raise PayloadTooLarge(
                f"message is {len(msg.envelope)} bytes encoded; the limit is {limit}",
                details={"limit": limit},
            )
        return PublishItem(msg, rule, given is not None)

    async def publish(
        self,
        entries: list[Mapping[str, Any]],
        principal: Principal,
        *,
        values_checked: bool = False,
    ) -> list[PublishOutcome | HeraldError]:
        """Publish each entry; a bad entry gets its error and does not fail the rest.

        Backplane and store failures raise (the whole call answers 503): accepted
        means delivered to the backplane and written to the queue store. A subscribed
        queue that refuses its copy does not fail the publish (docs/queues.md).
        """
        if len(entries) == 1:  # a single publish (POST /v1/publish, a WebSocket command)
            try:
                item = self.prepare(entries[0], principal, values_checked=values_checked)
            except HeraldError as exc:
                return [exc]
            return list(await self.publish_prepared([item]))
        results: list[PublishOutcome | HeraldError | None] = []
        items: list[PublishItem] = []
        slots: list[int] = []
        for entry in entries:
            try:
                items.append(self.prepare(entry, principal, values_checked=values_checked))
            except HeraldError as exc:
                results.append(exc)
            else:
                slots.append(len(results))
                results.append(None)  # filled in below
        if items:
            for slot, outcome in zip(slots, await self.publish_prepared(items), strict=True):
                results[slot] = outcome
        return [r for r in results if r is not None]

    async def publish_prepared(self, items: list[PublishItem]) -> list[PublishOutcome]:
        """Publish validated items (see `prepare`); raises when the backplane fails."""
        outcomes = await self.backplane.publish(items)
        queues = self.queues
        if queues is not None and queues.subscribed:
            fresh = [it.message for it, oc in zip(items, outcomes, strict=True) if not oc.duplicate]
            if fresh:
                try:
                    await queues.on_publish(fresh)
                except BaseException:
                    # Let a retry with the same id through again, so the queue copy
                    # is not lost to idempotency (live subscribers may see it twice).
                    for it in items:
                        if it.idempotent:
                            await self.backplane.forget(it.message.topic, it.message.id)
                    raise
        n = len(outcomes)
        for o in outcomes:
            if o.duplicate:
                n -= 1
        self.published_total += n
        return outcomes

    # ---- subscribe, history and resume --------------------------------------------

    def shape(self, cmd: Mapping[str, Any], principal: Principal) -> Shape:
        """Validate a `subscribe` command into a subscription shape (docs/protocol.md)."""
        pattern = validate_pattern(cmd.get("topic"))
        principal.check_subscribe(pattern)
        flt = compile_filter(cmd.get("filter"))
        batch_ms = cmd.get("batch_ms", 0)
        if (
            isinstance(batch_ms, bool)
            or not isinstance(batch_ms, int)
            or not (0 <= batch_ms <= 60_000)
        ):
            raise InvalidRequest("'batch_ms' must be an integer from 0 to 60000")
        batch_ms = max(batch_ms, self.settings.min_batch_for(pattern))
        mode = cmd.get("mode", "all")
        if mode not in ("all", "latest"):
            raise InvalidRequest("'mode' must be 'all' or 'latest'")
        key = cmd.get("key")
        if key is not None and (mode != "latest" or not isinstance(key, str) or not key):
            raise InvalidRequest("'key' is a non-empty attribute name, for mode 'latest' only")
        return Shape(pattern, flt, batch_ms, mode, key)

    async def resume(
        self,
        sink: Sink,
        shape: Shape,
        since: int | None,
        epoch: str | None,
        *,
        page: int = MAX_HISTORY_LIMIT,
    ) -> Resume:
        """Subscribe `sink` live to a history topic and tell it where it stands.

        With `since`, replay history after that offset. Live registration comes
        first so nothing published during the history read falls between the two;
        `Hub.finish_catch_up` then drops what both carried. Without `since`, only
        the current epoch and offset are read (so the client can resume later).

        A replay longer than `page` messages comes a page at a time (`more`), so the
        caller can wait for the socket to drain between pages instead of holding the
        whole replay in its write buffer.
        """
        _check_since(since)
        if is_wildcard(shape.pattern) or shape.mode == "latest":
            # Offsets are per topic, and conflation cannot be gap-free.
            raise InvalidRequest("'since' needs a concrete topic and mode 'all'")
        rule = self.settings.history_rule(shape.pattern)
        group = self.hub.subscribe(sink, shape, catch_up=True)
        page = min(page, MAX_HISTORY_LIMIT)
        try:
            hp = await self.backplane.history(
                shape.pattern, rule, since, page if since is not None else 0
            )
        except BaseException:
            self.hub.unsubscribe(sink, group.key)
            raise
        if since is None:
            owed = self.hub.finish_catch_up(sink, group.key, [], hp.latest)
            return Resume(False, hp.epoch, hp.latest, owed)
        msgs = hp.messages
        # A page cut short by `page` is still a recovery when it starts right after
        # `since` and the whole replay is within MAX_HISTORY_LIMIT.
        starts = hp.complete or (bool(msgs) and msgs[0].offset == since + 1)
        recovered = (
            rule is not None
            and starts
            and hp.latest - since <= MAX_HISTORY_LIMIT
            and (epoch is None or epoch == hp.epoch)
        )
        if recovered and len(msgs) >= page and (msgs[-1].offset or 0) < hp.latest:
            return Resume(True, hp.epoch, hp.latest, msgs, more=True)
        replay = msgs if recovered else []
        owed = self.hub.finish_catch_up(sink, group.key, replay, since if recovered else None)
        return Resume(recovered, hp.epoch, hp.latest, owed)

    async def resume_more(
        self, sink: Sink, shape: Shape, after: int, page: int
    ) -> tuple[list[Message], bool, int]:
        """The next page of a resume, after offset `after`: (messages, more, skipped).

        On the last page the sink goes live, and the messages include what arrived
        live meanwhile. `skipped` counts messages history trimmed between two pages.
        """
        rule = self.settings.history_rule(shape.pattern)
        try:
            hp = await self.backplane.history(
                shape.pattern, rule, after, min(page, MAX_HISTORY_LIMIT)
            )
        except BaseException:
            self.hub.unsubscribe(sink, shape.sub_key)
            raise
        msgs = hp.messages
        first = msgs[0].offset if msgs else hp.latest + 1
        skipped = max(0, (first or 0) - after - 1)
        if len(msgs) >= page and (msgs[-1].offset or 0) < hp.latest:
            return msgs, True, skipped
        return self.hub.finish_catch_up(sink, shape.sub_key, msgs, after), False, skipped

    async def history(self, topic: str, since: int | None, limit: int) -> HistoryPage:
        validate_topic(topic)
        _check_since(since)
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise InvalidRequest(f"'limit' must be 1-{MAX_HISTORY_LIMIT}")
        rule = self.settings.history_rule(topic)
        return await self.backplane.history(topic, rule, since, limit)

    # ---- stats -----------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """The counters a console charts, summed over pods by `presence`."""
        s = self.hub.stats
        return {
            "connections": self.connection_count(),
            "subscriptions": self.hub.subscription_count,
            "messages_published": self.published_total,
            "messages_delivered": s.messages_delivered,
            "messages_dropped": s.messages_dropped,
        }

    def stats(self) -> dict[str, Any]:
        s = self.hub.stats
        return {
            "engine": self.settings.engine,
            "ready": self.ready(),
            "draining": self.draining,
            "groups": self.hub.group_count,
            "subscriptions": self.hub.subscription_count,
            "patterns": len(self.hub.patterns()),
            "messages_published": self.published_total,
            "messages_in": s.messages_in,
            "messages_delivered": s.messages_delivered,
            "messages_dropped": s.messages_dropped,
            "frames_written": s.frames_written,
            "batches": s.batches,
            "slow_disconnects": s.slow_disconnects,
            "lagged_notices": s.lagged_notices,
            "publish_flush_seconds": s.publish_flush.snapshot(),
            "backplane": self.backplane.stats(),
        }


def _check_since(since: object) -> None:
    if since is not None and (
        isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_OFFSET
    ):
        raise InvalidRequest(f"'since' must be an integer offset from 0 to {MAX_OFFSET}")


def _check_attributes(attributes: object) -> None:
    if not isinstance(attributes, dict):
        raise InvalidRequest("'attributes' must be an object")
    if len(attributes) > 64:
        raise InvalidRequest("at most 64 attributes")
    for k, v in attributes.items():
        if not isinstance(k, str) or not 0 < len(k) <= 256:
            raise InvalidRequest("attribute names are strings of 1-256 characters")
        if not isinstance(v, str | int | float | bool) or v != v:  # v != v: NaN
            raise InvalidRequest(
                f"attribute {k!r} must be a string, number or boolean",
                details={"attribute": k},
            )

"""The Hub: local subscription groups, batching, and serialize-once broadcast.

Sans-I/O: the hub never awaits, never reads a clock and never touches Redis. The
caller passes `now` (monotonic seconds) in, and gets told through `on_wakeup`
when there is work to flush. Sockets appear only as `Sink`s whose transport has
`write()` and `get_write_buffer_size()`: the fanout loop writes the same frame
bytes to every member of a group and never waits for any one of them.

Subscriptions with the same shape (pattern, filter, batch_ms, mode, key) share a
`Group`: the filter runs once per group, the batch is encoded and framed once per
group, and every member gets byte-identical frames (docs/protocol.md).
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fanout.framing import text_frame
from fanout.index import SubscriptionIndex
from fanout.latency import LatencyHistogram
from fanout.message import Message
from shared.errors import FilterCostExceeded
from shared.filters import FilterPolicy

# Live messages kept for one resuming socket while its replay goes out; past this
# they are dropped and counted in a `lagged` notice.
MAX_CATCH_UP = 10_000

Mode = Literal["all", "latest"]
SlowPolicy = Literal["drop", "disconnect"]


class Transport(Protocol):
    """The two calls the fanout loop makes on a socket (asyncio.Transport has both)."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...


class Sink(Protocol):
    """One subscribed connection as the hub sees it."""

    @property
    def transport(self) -> Transport: ...

    def on_slow(self) -> None:
        """Called (after the fanout loop) when the `disconnect` policy fires."""


@dataclass(frozen=True, slots=True)
class Shape:
    """What makes two subscriptions share frames."""

    pattern: str
    filter: FilterPolicy
    batch_ms: int = 0
    mode: Mode = "all"
    key: str | None = None
    # Deterministic subscription key: same shape, same key, on every pod (docs/protocol.md).
    sub_key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        raw = "\0".join(
            (self.pattern, self.filter.canonical, str(self.batch_ms), self.mode, self.key or "")
        )
        key = hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()
        object.__setattr__(self, "sub_key", key)


class Group:
    """All local sockets subscribed with one shape, and the batch they are owed."""

    __slots__ = (
        "catching_up",
        "due",
        "key",
        "lagged",
        "members",
        "pending",
        "prefix",
        "received",
        "shape",
    )

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.key = shape.sub_key
        self.members: dict[Sink, None] = {}
        # Sockets resuming from history: they get flushed messages appended to their
        # own buffer instead of frames, until the replay is done (register
        # live first, then replay, then dedupe by offset).
        self.catching_up: dict[Sink, list[Message]] = {}
        self.pending: dict[object, Message] = {}
        self.due: float | None = None
        self.lagged: dict[Sink, int] = {}
        self.received = 0  # messages matched (and passing the filter), for presence rates
        self.prefix = b'{"op":"msgs","sub":"' + self.key.encode() + b'","msgs":['

    def add(self, msg: Message) -> bool:
        """Queue `msg`; True when the batch was empty before (a flush is owed)."""
        was_empty = not self.pending
        self.received += 1
        if self.shape.mode == "latest":
            k: object = msg.topic
            if self.shape.key is not None:
                v = msg.attributes.get(self.shape.key)
                k = (msg.topic, v) if v is None else v
            # Re-insert so the batch stays ordered by each key's newest arrival.
            self.pending.pop(k, None)
            self.pending[k] = msg
        else:
            self.pending[len(self.pending)] = msg
        return was_empty


@dataclass(slots=True)
class HubStats:
    """Counters read by /metrics and /v1/stats."""

    messages_in: int = 0
    messages_delivered: int = 0
    messages_dropped: int = 0
    frames_written: int = 0
    batches: int = 0
    slow_disconnects: int = 0
    lagged_notices: int = 0
    # Publish (`msg.ts`) to flush of each batch's oldest message: once per batch, not
    # per message, so the hot path pays one clock read and one bisect per flush.
    publish_flush: LatencyHistogram = field(default_factory=LatencyHistogram)


class Hub:
    """Routes messages to local subscription groups and broadcasts their batches."""

    def __init__(
        self,
        *,
        send_buffer_bytes: int = 1 << 20,
        slow_policy: SlowPolicy = "drop",
        max_frame_bytes: int = 1 << 20,
        max_filter_cost: int | None = None,
        max_filter_cost_per_sink: int | None = None,
        on_wakeup: Callable[[], None] | None = None,
        on_interest: Callable[[str, bool], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._limit = send_buffer_bytes
        self._slow_policy = slow_policy
        self._max_frame = max_frame_bytes
        self._max_cost = max_filter_cost
        self._max_sink_cost = max_filter_cost_per_sink
        self.filter_cost = 0  # of the distinct filters (groups): each runs once a message
        self._sink_cost: dict[Sink, int] = {}
        self._on_wakeup = on_wakeup
        self._on_interest = on_interest
        self._wall_clock = wall_clock  # `msg.ts` is wall-clock ms, set by the accepting pod
        self._index: SubscriptionIndex[Group] = SubscriptionIndex()
        self._groups: dict[str, Group] = {}
        self._patterns: dict[str, int] = {}
        self._sinks: dict[Sink, dict[str, Group]] = {}
        self._immediate: list[Group] = []
        self._timers: list[tuple[float, int, Group]] = []
        self._seq = 0
        self._lagging: set[Group] = set()  # groups owing someone a `lagged` notice
        self.stats = HubStats()

    # ---- subscriptions -------------------------------------------------------

    @property
    def group_count(self) -> int:
        return len(self._groups)

    @property
    def subscription_count(self) -> int:
        return sum(len(subs) for subs in self._sinks.values())

    def patterns(self) -> list[str]:
        """Patterns with at least one local subscriber (the pod's interest)."""
        return list(self._patterns)

    def presence(self) -> dict[str, tuple[int, int]]:
        """Per pattern: (local subscriptions, messages its groups matched so far)."""
        out: dict[str, tuple[int, int]] = {}
        for group in self._groups.values():
            subs, msgs = out.get(group.shape.pattern, (0, 0))
            out[group.shape.pattern] = (
                subs + len(group.members) + len(group.catching_up),
                msgs + group.received,
            )
        return out

    def subscribe(self, sink: Sink, shape: Shape, *, catch_up: bool = False) -> Group:
        """Add `sink` to the group of `shape`; idempotent for the same sink and shape.

        With `catch_up`, the sink receives nothing live until `finish_catch_up`;
        flushed messages are kept for it meanwhile.
        """
        group = self._groups.get(shape.sub_key)
        subs = self._sinks.get(sink)
        if subs is not None and shape.sub_key in subs:
            return subs[shape.sub_key]
        cost = shape.filter.cost
        if cost:
            self._check_cost(sink, cost, new_group=group is None)
            self._sink_cost[sink] = self._sink_cost.get(sink, 0) + cost
        if group is None:
            self.filter_cost += cost
            group = self._groups[shape.sub_key] = Group(shape)
            self._index.add(shape.pattern, group)
            n = self._patterns.get(shape.pattern, 0)
            self._patterns[shape.pattern] = n + 1
            if n == 0 and self._on_interest is not None:
                self._on_interest(shape.pattern, True)
        key = group.key  # one shared string for every socket of the group
        if subs is None:
            subs = self._sinks[sink] = {}
        subs[key] = group
        if catch_up:
            group.catching_up[sink] = []
        else:
            group.members[sink] = None
        return group

    def _check_cost(self, sink: Sink, cost: int, *, new_group: bool) -> None:
        # Bounded so that no client can make every publish slow (issue: 1,000 costly
        # filters on one socket took the publish rate from 5,389 to 3.7 msg/s).
        limit = self._max_sink_cost
        if limit is not None and self._sink_cost.get(sink, 0) + cost > limit:
            raise FilterCostExceeded(
                f"the filters of this connection would cost more than {limit}",
                details={"cost": cost, "limit": limit},
            )
        limit = self._max_cost
        if new_group and limit is not None and self.filter_cost + cost > limit:
            raise FilterCostExceeded(
                f"the filters of this server would cost more than {limit}; try later",
                details={"cost": cost, "limit": limit},
            )

    def unsubscribe(self, sink: Sink, key: str) -> bool:
        """Remove one subscription of `sink`; False when it had none with that key."""
        subs = self._sinks.get(sink)
        if subs is None or key not in subs:
            return False
        group = subs.pop(key)
        if not subs:
            del self._sinks[sink]
        self._leave(sink, group)
        return True

    def remove_sink(self, sink: Sink) -> None:
        """Drop every subscription of a closed connection."""
        for group in self._sinks.pop(sink, {}).values():
            self._leave(sink, group)

    def subscriptions_of(self, sink: Sink) -> Collection[str]:
        return self._sinks.get(sink, {}).keys()

    def patterns_of(self, sink: Sink) -> dict[str, str]:
        """Subscription key → pattern, for every subscription of `sink`."""
        return {k: g.shape.pattern for k, g in self._sinks.get(sink, {}).items()}

    def _leave(self, sink: Sink, group: Group) -> None:
        cost = group.shape.filter.cost
        if cost:
            left = self._sink_cost.pop(sink, 0) - cost
            if left > 0:
                self._sink_cost[sink] = left
        group.members.pop(sink, None)
        group.catching_up.pop(sink, None)
        group.lagged.pop(sink, None)
        if group.members or group.catching_up:
            return
        del self._groups[group.key]
        self.filter_cost -= cost
        self._index.remove(group.shape.pattern, group)
        group.pending.clear()
        group.due = None
        pattern = group.shape.pattern
        n = self._patterns[pattern] - 1
        if n:
            self._patterns[pattern] = n
        else:
            del self._patterns[pattern]
            if self._on_interest is not None:
                self._on_interest(pattern, False)

    def finish_catch_up(
        self, sink: Sink, key: str, replayed: list[Message], since: int | None = None
    ) -> list[Message]:
        """End a resume: return what the sink is owed, oldest first, and go live.

        `replayed` is the history after the client's offset `since`. Live messages
        flushed meanwhile are appended only when their offset is newer than both the
        replay's last and `since`, so nothing is lost and nothing is sent twice. The
        caller writes the returned messages in the same event-loop turn.
        """
        subs = self._sinks.get(sink)
        group = subs.get(key) if subs else None
        if group is None or sink not in group.catching_up:
            return replayed
        buffered = group.catching_up.pop(sink)
        floor = replayed[-1].offset if replayed else since
        out = list(replayed)
        for m in buffered:
            if floor is None or m.offset is None or m.offset > floor:
                out.append(m)
        group.members[sink] = None
        return out

    # ---- dispatch and flush ----------------------------------------------------

    def dispatch(self, msg: Message, now: float) -> None:
        """Queue `msg` on every matching group whose filter accepts it."""
        self.stats.messages_in += 1
        wake = False
        for group in self._index.match(msg.topic):
            f = group.shape.filter
            if not f.match_all and not f.matches(msg.attributes):
                continue
            if group.add(msg):
                wake |= self._schedule(group, now)
        if wake and self._on_wakeup is not None:
            self._on_wakeup()

    def dispatch_many(self, msgs: Iterable[Message], now: float) -> None:
        """Dispatch a backplane delivery, all stamped with the same `now`."""
        dispatch = self.dispatch
        for msg in msgs:
            dispatch(msg, now)

    def _schedule(self, group: Group, now: float) -> bool:
        batch_ms = group.shape.batch_ms
        if batch_ms <= 0:
            self._immediate.append(group)
            return len(self._immediate) == 1
        due = now + batch_ms / 1000.0
        group.due = due
        self._seq += 1
        earliest = not self._timers or due < self._timers[0][0]
        heapq.heappush(self._timers, (due, self._seq, group))
        return earliest

    @property
    def has_immediate(self) -> bool:
        return bool(self._immediate)

    def next_deadline(self) -> float | None:
        """When the earliest batched group is due, or None."""
        timers = self._timers
        while timers:
            due, _, group = timers[0]
            if group.due == due and group.key in self._groups:
                return due
            heapq.heappop(timers)  # stale: flushed or removed since
        return None

    def flush_immediate(self) -> int:
        """Flush every `batch_ms=0` group that got messages this turn."""
        groups, self._immediate = self._immediate, []
        for group in groups:
            self._flush(group)
        return len(groups)

    def flush_due(self, now: float) -> int:
        """Flush every batched group whose interval has ended by `now`."""
        n = 0
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, _, group = heapq.heappop(timers)
            if group.due != due or group.key not in self._groups:
                continue
            group.due = None
            self._flush(group)
            n += 1
        return n

    def _flush(self, group: Group) -> None:
        if not group.pending:
            return
        msgs = list(group.pending.values())
        group.pending.clear()
        self.stats.batches += 1
        for sink, buf in group.catching_up.items():
            if len(buf) < MAX_CATCH_UP:
                buf.extend(msgs)
            else:  # a resume that never ends must not hold every live message
                group.lagged[sink] = group.lagged.get(sink, 0) + len(msgs)
                self._lagging.add(group)
        if not group.members:
            return
        # Another pod's clock may run ahead: a negative age counts as 0.
        age = self._wall_clock() - msgs[0].ts / 1000
        self.stats.publish_flush.observe(age if age > 0 else 0.0)
        if len(msgs) == 1:  # the common case: one frame, whatever its size (see _chunks)
            self._broadcast(group, text_frame(group.prefix + msgs[0].envelope + b"]}"), 1)
            return
        for frame, count in self._frames(group.prefix, msgs):
            self._broadcast(group, frame, count)

    def msgs_frames(self, key: str, msgs: list[Message]) -> list[bytes]:
        """The `msgs` frames of subscription `key` carrying `msgs` (a resume's replay),
        chunked like every broadcast."""
        prefix = b'{"op":"msgs","sub":"' + key.encode() + b'","msgs":['
        return [frame for frame, _ in self._frames(prefix, msgs)]

    def _frames(self, prefix: bytes, msgs: list[Message]) -> Iterable[tuple[bytes, int]]:
        for chunk in self._chunks(msgs, len(prefix) + 2):
            payload = prefix + b",".join(m.envelope for m in chunk) + b"]}"
            yield text_frame(payload), len(chunk)

    def _chunks(self, msgs: list[Message], overhead: int) -> Iterable[list[Message]]:
        # Keep frames under max_frame_bytes so one huge batch never trips the
        # slow-consumer limit of a healthy socket. One message over the limit still
        # goes out, alone (it passed max_message_bytes).
        limit = self._max_frame - overhead
        chunk: list[Message] = []
        size = 0
        for m in msgs:
            n = len(m.envelope) + 1
            if chunk and size + n > limit:
                yield chunk
                chunk, size = [], 0
            chunk.append(m)
            size += n
        if chunk:
            yield chunk

    def _broadcast(self, group: Group, frame: bytes, count: int) -> None:
        # The hot loop: one buffer check and one write per socket, nothing else.
        # A socket may take the frame while buffered + len(frame) <= limit, and an
        # empty buffer always takes it (so one frame over the limit still goes out).
        cap = max(self._limit - len(frame), 0)
        slow: list[Sink] | None = None
        lagged = group.lagged
        if lagged:
            self._write_lagged(group, cap)
        for sink in group.members:
            t = sink.transport
            buffered = t.get_write_buffer_size()
            if buffered > cap and buffered:
                if slow is None:
                    slow = []
                slow.append(sink)
            else:
                t.write(frame)
        writes = len(group.members) - (len(slow) if slow else 0)
        stats = self.stats
        stats.frames_written += writes
        stats.messages_delivered += writes * count
        if slow:
            stats.messages_dropped += len(slow) * count
            for sink in slow:
                if self._slow_policy == "disconnect":
                    stats.slow_disconnects += 1
                    self.remove_sink(sink)
                    sink.on_slow()
                else:
                    lagged[sink] = lagged.get(sink, 0) + count
                    self._lagging.add(group)

    def _write_lagged(self, group: Group, cap: int) -> None:
        """Owed `lagged` notices go out before the next frame, if there is room for it."""
        for sink in list(group.lagged):
            t = sink.transport
            if t.get_write_buffer_size() <= cap:
                t.write(self._lagged_frame(group, group.lagged.pop(sink)))

    def _lagged_frame(self, group: Group, dropped: int) -> bytes:
        self.stats.lagged_notices += 1
        payload = b'{"op":"lagged","sub":"%s","dropped":%d}' % (group.key.encode(), dropped)
        return text_frame(payload)

    def mark_lagged(self, topic: str, dropped: int) -> None:
        """Owe every subscriber of `topic` a `lagged` notice: messages were lost
        before they reached this process (a backplane outage), not by its socket."""
        for group in self._index.match(topic):
            if not group.members:
                continue
            for sink in group.members:
                group.lagged[sink] = group.lagged.get(sink, 0) + dropped
            self._lagging.add(group)

    def send_lagged_notices(self) -> None:
        """Tell sockets that drained since they lagged (call now and then).

        Without this, a socket that lagged on a topic that then fell quiet would
        never hear how much it missed.
        """
        limit = self._limit
        for group in list(self._lagging):
            for sink in list(group.lagged):
                t = sink.transport
                if t.get_write_buffer_size() < limit // 2:
                    t.write(self._lagged_frame(group, group.lagged.pop(sink)))
            if not group.lagged or group.key not in self._groups:
                self._lagging.discard(group)

"""Publishing through Redis: per-message planning, coalesced pipelines, packing.

`Publisher.publish` turns each `PublishItem` into its Redis work (`_Op`): a call of
the publish script (history, offsets, idempotency) or plain PUBLISHes. Calls that
arrive while earlier ones are in flight are sent together in one pipeline (at most
`MAX_INFLIGHT` pipelines at once), so a batch publish is one round trip; runs of
plain messages for the same channels are packed into one newline-joined payload.
See docs/redis.md ("Publishing").
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

from fanout.backplane import IDEMPOTENCY_WINDOW_S, PublishItem, PublishOutcome
from fanout.redis import keys, scripts
from fanout.redis.errors import unavailable
from fanout.redis.registry import PrefixRegistry
from fanout.redis.wire import CommandWire, Done, encode_command

log = logging.getLogger("herald.redis")

# Publish pipelines in flight at once; later calls join the next one. One: Redis runs
# commands one at a time anyway, and every call that waits out a round trip shares the
# next pipeline's syscall and driver work (issue 14: 79 -> 68 µs of server CPU per HTTP
# publish under load, and more publishes per second). An idle pod still sends at once.
MAX_INFLIGHT = 1
MAX_PIPELINE = 2000  # messages per pipeline
PACK_BYTES = 128 * 1024  # envelopes per packed PUBLISH payload
IDLE_EXPIRY_S = 7 * 86400  # a history topic's state outlives its last publish this long
SIZE_WITHOUT_LIMIT = 10_000  # same bound as the memory engine for ttl-only rules

Result = list[PublishOutcome]
_Span = tuple[int, int, int, int]  # ops [i, j) -> replies [r, r + n)


def _plain(results: list[Any]) -> list[PublishOutcome | Exception]:
    """Results without the envelopes the script returned for cluster SPUBLISHes."""
    return [r[0] if isinstance(r, tuple) else r for r in results]


def _request(wire: CommandWire, commands: list[tuple[Any, ...]], done: Done) -> None:
    """Send `commands` on `wire`, encoded once; `done` gets their replies."""
    wire.request(b"".join([encode_command(*args) for args in commands]), len(commands), done)


@dataclass(slots=True)
class _Op:
    """One message's Redis work: a script call, or plain publishes."""

    item: PublishItem
    channels: list[bytes]  # published with the message (by the script when scripted)
    after: list[bytes] = field(default_factory=list)  # SPUBLISHed after the script
    argv: list[bytes | str | int] | None = None  # set when scripted

    @property
    def scripted(self) -> bool:
        return self.argv is not None


@dataclass(slots=True)
class _Call:
    ops: list[_Op]
    future: asyncio.Future[Result]


class Publisher:
    """Sends published messages to Redis, in as few round trips as possible."""

    def __init__(self, registry: PrefixRegistry, counters: dict[str, int]) -> None:
        self._registry = registry
        self._counters = counters
        self._client: Any = None
        self._cluster = False
        self._pub = "PUBLISH"
        self._wire: CommandWire | None = None
        self._queue: deque[_Call] = deque()
        self._inflight = 0
        self._flushes: set[asyncio.Task[None]] = set()

    def configure(self, client: Any, *, cluster: bool, wire: CommandWire | None = None) -> None:
        """Use `client` (Redis or RedisCluster); SPUBLISH on a cluster.

        With `wire` (a single Redis), publish pipelines travel on it instead of
        through the driver; `client` still loads scripts.
        """
        if self._wire is not None and self._wire is not wire:
            self._wire.close()
        self._client = client
        self._cluster = cluster
        self._pub = "SPUBLISH" if cluster else "PUBLISH"
        self._wire = wire

    def reset(self) -> None:
        """Drop the publish connection (Redis went away); the next publish reconnects."""
        if self._wire is not None:
            self._wire.close()

    async def publish(self, items: list[PublishItem]) -> list[PublishOutcome]:
        """Publish `items` (one pipeline, shared with concurrent calls)."""
        now_ms = int(time.time() * 1000)
        ops = [self._plan(item, now_ms) for item in items]
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(ops, fut))
        self._kick()
        return await fut

    def _plan(self, item: PublishItem, now_ms: int) -> _Op:
        msg = item.message
        channels = [keys.topic_channel(msg.topic), *self._registry.channels_for(msg.topic)]
        rule = item.history
        if rule is None and not item.idempotent:
            return _Op(item, channels)
        after: list[bytes] = []
        if self._cluster and len(channels) > 1:
            # Prefix channels live in other slots than the topic: not from the script.
            channels, after = channels[:1], channels[1:]
        ttl_ms = int(rule.ttl * 1000) if rule is not None and rule.ttl else 0
        size = (rule.size if rule is not None else None) or SIZE_WITHOUT_LIMIT
        argv: list[bytes | str | int] = [
            msg.envelope,
            1 if rule is not None else 0,
            1 if item.idempotent else 0,
            size,
            ttl_ms,
            msg.ts,
            now_ms,
            secrets.token_hex(4),
            int(IDLE_EXPIRY_S * 1000),
            int(IDEMPOTENCY_WINDOW_S * 1000),
            self._pub,
            1 if after else 0,
            *channels,
        ]
        return _Op(item, channels, after, argv)

    def _kick(self) -> None:
        while self._queue and self._inflight < MAX_INFLIGHT:
            batch: list[_Call] = []
            n = 0
            while self._queue and (not batch or n + len(self._queue[0].ops) <= MAX_PIPELINE):
                call = self._queue.popleft()
                batch.append(call)
                n += len(call.ops)
            self._inflight += 1
            wire = self._wire
            if wire is not None and wire.connected:
                self._send_now(batch, wire)
            else:
                self._spawn(self._flush(batch))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._flushes.add(task)
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._release()

    def _release(self) -> None:
        self._inflight -= 1
        self._kick()

    def _send_now(self, calls: list[_Call], wire: CommandWire) -> None:
        """The hot path: one write, and the replies settle the calls from the wire's
        callback (no task, no await). NOSCRIPT falls back to a task that reloads."""
        ops = [op for call in calls for op in call.ops]
        commands, spans = self._commands(ops)

        def done(replies: list[Any] | Exception) -> None:
            try:
                if isinstance(replies, Exception):
                    raise replies
                results = self._outcomes(ops, spans, replies)
            except Exception as exc:
                self._fail(calls, len(ops), exc)
                self._release()
                return
            if any(isinstance(r, NoScriptError) for r in results):
                self._spawn(self._reload(calls, ops, results))
                return
            self._settle(calls, _plain(results))
            self._release()

        _request(wire, commands, done)

    async def _reload(self, calls: list[_Call], ops: list[_Op], results: list[Any]) -> None:
        try:
            results = await scripts.RUNNER.reload_missing(
                self._client, results, lambda missing: self._pipeline([ops[i] for i in missing])
            )
        except Exception as exc:
            self._fail(calls, len(ops), exc)
            return
        self._settle(calls, _plain(results))

    async def _flush(self, calls: list[_Call]) -> None:
        ops = [op for call in calls for op in call.ops]
        try:
            results = await self._run(ops)
        except Exception as exc:
            self._fail(calls, len(ops), exc)
            return
        self._settle(calls, results)

    def _fail(self, calls: list[_Call], n: int, exc: Exception) -> None:
        log.debug("redis: publish failed", exc_info=exc)
        self._counters["publish_errors"] += n
        err = unavailable(exc)
        for call in calls:
            if not call.future.done():
                call.future.set_exception(err)

    def _settle(self, calls: list[_Call], results: list[PublishOutcome | Exception]) -> None:
        i = 0
        for call in calls:
            mine = results[i : i + len(call.ops)]
            i += len(call.ops)
            if call.future.done():
                continue
            failed = next((r for r in mine if isinstance(r, Exception)), None)
            if failed is not None:
                self._counters["publish_errors"] += len(mine)
                call.future.set_exception(unavailable(failed))
            else:
                outcomes = [r for r in mine if isinstance(r, PublishOutcome)]
                self._counters["messages_out"] += sum(1 for o in outcomes if not o.duplicate)
                call.future.set_result(outcomes)

    async def _run(self, ops: list[_Op]) -> list[PublishOutcome | Exception]:
        """Send every op in one pipeline; a NOSCRIPT reloads and resends those ops."""
        results = await scripts.RUNNER.reload_missing(
            self._client,
            await self._pipeline(ops),
            lambda missing: self._pipeline([ops[i] for i in missing]),
        )
        # Cluster: the prefix channels of scripted messages, with the final envelope.
        later: list[tuple[bytes, bytes]] = []
        for op, r in zip(ops, results, strict=True):
            if op.after and isinstance(r, tuple) and not r[0].duplicate:
                later.extend((ch, r[1]) for ch in op.after)
        if later:
            pipe = self._client.pipeline(transaction=False)
            for ch, env in later:
                pipe.execute_command(self._pub, ch, env)
            for r in await pipe.execute(raise_on_error=False):
                if isinstance(r, Exception):
                    raise r
        return _plain(results)

    async def _pipeline(
        self, ops: Sequence[_Op]
    ) -> list[tuple[PublishOutcome, bytes] | PublishOutcome | Exception]:
        """One pipeline for `ops`; one result per op, in order.

        A run of consecutive plain messages for the same channels travels as one
        PUBLISH per channel whose payload is their envelopes joined by newlines
        (JSON envelopes never contain a raw newline): a batch of 500 is then one
        Redis command per channel, and one reply for the receiving pod to parse.
        """
        commands, spans = self._commands(ops)
        return self._outcomes(ops, spans, await self._send(commands))

    def _commands(self, ops: Sequence[_Op]) -> tuple[list[tuple[Any, ...]], list[_Span]]:
        """The Redis commands of `ops`, and which replies answer which ops."""
        commands: list[tuple[Any, ...]] = []
        pub = self._pub
        spans: list[_Span] = []  # ops [i, j) -> replies [r, r + n)
        replies_n = 0
        i = 0
        while i < len(ops):
            op = ops[i]
            msg = op.item.message
            if op.argv is not None:
                topic_keys = (
                    keys.meta_key(msg.topic),
                    keys.history_key(msg.topic),
                    keys.idempotency_key(msg.topic, msg.id),
                )
                commands.append(("EVALSHA", scripts.PUBLISH.sha, 3, *topic_keys, *op.argv))
                spans.append((i, i + 1, replies_n, 1))
                replies_n += 1
                i += 1
                continue
            envelopes = [msg.envelope]
            size = len(msg.envelope)
            j = i + 1
            while j < len(ops):
                nxt = ops[j]
                env = nxt.item.message.envelope
                if (
                    nxt.argv is not None
                    or nxt.channels != op.channels
                    or size + len(env) > PACK_BYTES
                ):
                    break
                envelopes.append(env)
                size += len(env) + 1
                j += 1
            payload = envelopes[0] if len(envelopes) == 1 else b"\n".join(envelopes)
            commands.extend((pub, ch, payload) for ch in op.channels)
            spans.append((i, j, replies_n, len(op.channels)))
            replies_n += len(op.channels)
            i = j
        return commands, spans

    def _outcomes(
        self, ops: Sequence[_Op], spans: list[_Span], replies: list[Any]
    ) -> list[tuple[PublishOutcome, bytes] | PublishOutcome | Exception]:
        """One result per op from the pipeline's replies (see `_commands`)."""
        out: list[tuple[PublishOutcome, bytes] | PublishOutcome | Exception] = []
        for i, j, r, n in spans:
            if ops[i].argv is None:
                err = next((x for x in replies[r : r + n] if isinstance(x, Exception)), None)
                for op in ops[i:j]:
                    out.append(err if err is not None else PublishOutcome(op.item.message.id, None))
                continue
            reply = replies[r]
            if isinstance(reply, Exception):
                out.append(reply)
                continue
            offset = int(reply[1]) if reply[1] not in (b"", "") else None
            outcome = PublishOutcome(ops[i].item.message.id, offset, duplicate=bool(reply[0]))
            out.append((outcome, reply[2]) if len(reply) > 2 else outcome)
        return out

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run `commands` in one round trip; one reply or exception each, in order."""
        wire = self._wire
        if wire is None:
            pipe = self._client.pipeline(transaction=False)
            for args in commands:
                pipe.execute_command(*args)
            return list(await pipe.execute(raise_on_error=False))
        await wire.connect()
        fut: asyncio.Future[list[Any] | Exception] = asyncio.get_running_loop().create_future()

        def done(replies: list[Any] | Exception) -> None:
            if not fut.done():
                fut.set_result(replies)

        _request(wire, commands, done)
        replies = await fut
        if isinstance(replies, Exception):
            raise replies
        return replies

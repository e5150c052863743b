"""Presence: how many subscriptions each pattern has, on this pod or on every pod.

The hub knows its own sockets. On the redis engine each pod also writes its
snapshot to Redis every `WRITE_S` (one pipeline: a JSON string with a TTL and its
pod id in a sorted set scored by expiry), so any pod can add up every live pod's
counts. A pod that dies stops refreshing and drops out after `TTL_S`. Counts are
therefore up to `WRITE_S` old for other pods; this pod's own are always live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fanout.backplane import Backplane
from fanout.hub import Hub
from fanout.redis import keys
from fanout.redis.errors import REDIS_ERRORS, translated
from shared.errors import BackplaneUnavailable
from shared.topics import is_wildcard, pattern_matches

log = logging.getLogger("herald.presence")

WRITE_S = 1.0
TTL_S = 5.0


@dataclass(slots=True)
class PatternPresence:
    """Subscriptions to one pattern and the messages they matched, summed over pods."""

    subscribers: int = 0
    messages: int = 0


@dataclass(slots=True)
class PresenceSnapshot:
    pods: int
    patterns: dict[str, PatternPresence] = field(default_factory=dict)
    # Pod counters (connections, subscriptions, messages published, delivered,
    # dropped) summed over pods, so a console behind a load balancer sees them all.
    totals: dict[str, int] = field(default_factory=dict)

    def add_totals(self, counters: dict[str, Any]) -> None:
        for name, value in counters.items():
            if isinstance(value, int):
                self.totals[name] = self.totals.get(name, 0) + value

    def for_topic(self, topic: str) -> tuple[int, dict[str, int]]:
        """Subscribers of `topic`: for a concrete topic every pattern matching it,
        for a wildcard pattern that exact pattern. Also the count per pattern."""
        if is_wildcard(topic):
            hits = {topic: self.patterns[topic].subscribers} if topic in self.patterns else {}
        else:
            hits = {p: v.subscribers for p, v in self.patterns.items() if pattern_matches(p, topic)}
        return sum(hits.values()), hits


class Presence:
    """Reads and, on the redis engine, publishes this pod's subscription counts."""

    def __init__(
        self, hub: Hub, backplane: Backplane, counters: Callable[[], dict[str, int]]
    ) -> None:
        self._hub = hub
        self._backplane = backplane
        self._counters = counters
        self._pod = str(getattr(backplane, "pod", "local"))
        self._task: asyncio.Task[None] | None = None

    def _client(self) -> Any:
        return getattr(self._backplane, "command_client", None)

    @property
    def shared(self) -> bool:
        """Whether counts come from every pod (the redis engine)."""
        return hasattr(self._backplane, "command_client")

    async def start(self) -> None:
        if self.shared:
            self._task = asyncio.create_task(self._write_forever())

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        client = self._client()
        if client is not None:  # leave at once instead of after TTL_S
            with contextlib.suppress(Exception):
                pipe = client.pipeline(transaction=False)
                pipe.zrem(keys.PRESENCE_KEY, self._pod)
                pipe.delete(keys.presence_key(self._pod))
                await asyncio.wait_for(pipe.execute(), 0.5)

    def _local_json(self) -> bytes:
        patterns = {p: list(v) for p, v in self._hub.presence().items()}
        return orjson.dumps({"p": patterns, "s": self._counters()})

    async def _write_forever(self) -> None:
        while True:
            client = self._client()
            if client is not None:
                try:
                    await self._write(client)
                except REDIS_ERRORS as exc:  # Redis away: the next round retries
                    log.debug("presence: write failed: %s", exc)
            await asyncio.sleep(WRITE_S)

    async def _write(self, client: Any) -> None:
        now_ms = int(time.time() * 1000)
        pipe = client.pipeline(transaction=False)
        pipe.set(keys.presence_key(self._pod), self._local_json(), px=int(TTL_S * 1000))
        pipe.zadd(keys.PRESENCE_KEY, {self._pod: now_ms + int(TTL_S * 1000)})
        pipe.zremrangebyscore(keys.PRESENCE_KEY, "-inf", now_ms)
        await pipe.execute()

    async def snapshot(self) -> PresenceSnapshot:
        """Counts per pattern over every live pod (this pod's are live, not stored)."""
        out = PresenceSnapshot(pods=1)
        for pattern, (subs, msgs) in self._hub.presence().items():
            out.patterns[pattern] = PatternPresence(subs, msgs)
        out.add_totals(self._counters())
        client = self._client()
        if not self.shared:
            return out
        if client is None:
            raise BackplaneUnavailable("presence: not connected to Redis yet")
        with translated(BackplaneUnavailable, "presence (Redis)"):
            pods = [
                p.decode() if isinstance(p, bytes) else str(p)
                for p in await client.zrangebyscore(
                    keys.PRESENCE_KEY, int(time.time() * 1000), "+inf"
                )
            ]
            others = [p for p in pods if p != self._pod]
            pipe = client.pipeline(transaction=False)
            for pod in others:
                pipe.get(keys.presence_key(pod))
            blobs = await pipe.execute() if others else []
        for blob in blobs:
            if not blob:  # expired between the two reads
                continue
            out.pods += 1
            entry_of_pod = orjson.loads(blob)
            out.add_totals(entry_of_pod.get("s") or {})
            for pattern, (subs, msgs) in (entry_of_pod.get("p") or {}).items():
                entry = out.patterns.setdefault(pattern, PatternPresence())
                entry.subscribers += int(subs)
                entry.messages += int(msgs)
        return out

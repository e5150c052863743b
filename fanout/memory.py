"""MemoryBackplane: the embedded engine's in-process routing, history and dedup."""

from __future__ import annotations

import time

from fanout.backplane import (
    IDEMPOTENCY_WINDOW_S,
    Backplane,
    Deliver,
    HistoryPage,
    PublishItem,
    PublishOutcome,
)
from fanout.history import MemoryHistory
from fanout.message import Message
from shared.config import HistoryRule


class MemoryBackplane(Backplane):
    """One process: publishing is a direct call into the local hub."""

    name = "memory"

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._history = MemoryHistory()
        # (topic, id) -> (expires_at, first outcome); pruned lazily in id order.
        self._seen: dict[tuple[str, str], tuple[float, PublishOutcome]] = {}
        self._published = 0

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._deliver = None

    async def publish(self, items: list[PublishItem]) -> list[PublishOutcome]:
        now = time.time()
        self._prune(now)
        out: list[PublishOutcome] = []
        accepted: list[Message] = []
        for item in items:
            msg = item.message
            key = (msg.topic, msg.id)
            if item.idempotent:
                seen = self._seen.get(key)
                if seen is not None:
                    first = seen[1]
                    out.append(PublishOutcome(first.id, first.offset, duplicate=True))
                    continue
            if item.history is not None:
                msg = self._history.append(msg, item.history, int(now * 1000))
            outcome = PublishOutcome(msg.id, msg.offset)
            if item.idempotent:
                self._seen[key] = (now + IDEMPOTENCY_WINDOW_S, outcome)
            out.append(outcome)
            accepted.append(msg)
        self._published += len(accepted)
        if accepted and self._deliver is not None:
            self._deliver(accepted)
        return out

    def _prune(self, now: float) -> None:
        # Insertion order is expiry order (fixed window), so stop at the first live one.
        seen = self._seen
        while seen:
            key = next(iter(seen))
            if seen[key][0] > now:
                break
            del seen[key]

    async def forget(self, topic: str, msg_id: str) -> None:
        self._seen.pop((topic, msg_id), None)

    def watch(self, pattern: str) -> None:
        """Every local subscriber is already in the hub: nothing to route."""

    def unwatch(self, pattern: str) -> None:
        """See `watch`."""

    async def history(
        self, topic: str, rule: HistoryRule | None, since: int | None, limit: int
    ) -> HistoryPage:
        return self._history.read(topic, rule, since, limit, int(time.time() * 1000))

    def ready(self) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {"published": self._published}

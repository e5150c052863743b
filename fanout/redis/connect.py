"""How Herald reaches Redis: its URLs, cluster detection, client options, backoff.

Shared by the backplane (`fanout.redis.backplane`) and the queue store
(`fanout.queues.redis_store`), so both read a `HERALD_REDIS_URL` the same way:

- `redis+cluster://` (or `rediss+cluster://`) forces Redis Cluster; otherwise
  `INFO cluster` on the given node decides (`detect_cluster`).
- `?max_connections=N` caps a client's pool. It is removed from the URL that
  redis-py sees; each caller picks its own default when it is absent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("herald.redis")


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A Herald Redis URL, split into what redis-py accepts and Herald's own parts."""

    url: str  # without the `+cluster` suffix and `max_connections`
    cluster: bool  # forced by the scheme
    max_connections: int | None  # `?max_connections=N`, when given

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        parts = urlsplit(url)
        scheme = parts.scheme
        cluster = scheme.endswith("+cluster")
        scheme = scheme.removesuffix("+cluster")
        query = dict(parse_qsl(parts.query))
        raw = query.pop("max_connections", None)
        clean = urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
        return cls(clean, cluster, int(raw) if raw is not None else None)

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss")


def no_retry() -> Retry:
    """The driver must never resend a command by itself: a script or a publish
    that may have run once would run twice. Callers answer 503 and let clients retry."""
    return Retry(NoBackoff(), 0)


async def detect_cluster(target: RedisURL, **kwargs: Any) -> bool:
    """Whether `target` names a Redis Cluster: forced by its scheme, else `INFO cluster`.

    The probe is a short-lived client of its own, so no caller's pool is touched.
    """
    if target.cluster:
        return True
    kwargs.setdefault("retry", no_retry())
    probe = Redis.from_url(target.url, **kwargs)
    try:
        info = await probe.info("cluster")
        return bool(int(info.get("cluster_enabled", 0)))
    finally:
        await probe.aclose()


class Backoff:
    """Exponential delays for a reconnect loop: `low`, doubling, at most `high`."""

    def __init__(self, low: float = 0.05, high: float = 1.0) -> None:
        self.low = low
        self.high = high
        self.delay = low

    async def sleep(self) -> None:
        """Wait the current delay, and make the next one longer."""
        delay = self.delay
        self.delay = min(delay * 2, self.high)
        await asyncio.sleep(delay)

    def reset(self) -> None:
        """A success: the next failure waits `low` again."""
        self.delay = self.low


async def stop_tasks(tasks: Iterable[asyncio.Task[None]], wait_s: float = 2.0) -> None:
    """Cancel background loops and wait for them, `wait_s` at most.

    Bounded because a driver call can swallow a cancellation; the loops also end
    on their owner's closed flag, so one that missed it stops at its next turn.
    """
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, late = await asyncio.wait(pending, timeout=wait_s)
    for task in late:
        log.warning("redis: %s did not stop within %.1fs", task.get_name(), wait_s)

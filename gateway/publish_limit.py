"""The HTTP publish rate limit: a token bucket per API key or JWT subject (issue 9)."""

from __future__ import annotations

import time

from fastapi import Request
from starlette.datastructures import State

from fanout.node import Node
from shared.auth import Principal
from shared.errors import RateLimited
from shared.ratelimit import TokenBucket


class PublishLimiter:
    """A token bucket per caller (API key or JWT subject) for HTTP publishes.

    A publish costs one token per message (a batch at most `burst`, so that a full
    batch always fits an idle bucket). Buckets idle long enough to be full again are
    forgotten when the table grows, so memory follows the active callers only.
    """

    MAX_IDLE_CALLERS = 10_000

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[TokenBucket, list[float]]] = {}

    def check(self, caller: str, cost: int, now: float) -> None:
        """Spend `cost` tokens of `caller`, or raise `RateLimited` (429)."""
        entry = self._buckets.get(caller)
        if entry is None:
            if len(self._buckets) >= self.MAX_IDLE_CALLERS:
                self._forget_idle(now)
            entry = self._buckets[caller] = (TokenBucket(self.rate, self.burst), [now])
        bucket, last = entry
        last[0] = now
        wait = bucket.take(now, min(cost, self.burst))
        if wait > 0:
            raise RateLimited(
                f"over {self.rate:g} messages/s for this caller; retry in {wait:.2f} s",
                details={"retry_after_s": round(wait, 3)},
            )

    def _forget_idle(self, now: float) -> None:
        refill = self.burst / self.rate
        for caller in [c for c, (_, last) in self._buckets.items() if now - last[0] > refill]:
            del self._buckets[caller]


def check_publish_rate(request: Request, node: Node, principal: Principal, cost: int) -> None:
    """Charge `cost` messages to the caller, or raise `RateLimited` (429 + Retry-After)."""
    charge_publish(request.app.state, node, principal, cost)


def charge_publish(state: State, node: Node, principal: Principal, cost: int) -> None:
    """`check_publish_rate` for the app whose `state` holds the limiter (the fast path).

    The limiter is built on first use from the node's settings; "no limit" is kept too
    (`False`), so an unlimited publish costs one attribute read (issue 14).
    """
    limiter: PublishLimiter | bool = getattr(state, "publish_limiter", True)
    if limiter is True:
        limits = node.settings.publish_rate()
        limiter = state.publish_limiter = PublishLimiter(*limits) if limits else False
    if isinstance(limiter, PublishLimiter):
        limiter.check(principal.sub, cost, time.monotonic())

"""A token bucket: the one rate limiter of the WebSocket and HTTP edges.

Sans-I/O like the hub: the caller passes `now` (any monotonic clock, in seconds),
so tests step time by hand.
"""

from __future__ import annotations


class TokenBucket:
    """Allows `rate` operations per second on average, and bursts of up to `burst`."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend `cost` tokens: 0.0 when allowed, else the seconds until it would be."""
        at = self._at
        if at is not None and now > at:
            self._tokens = min(self.burst, self._tokens + (now - at) * self.rate)
        if at is None or now > at:
            self._at = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate

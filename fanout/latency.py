"""A Prometheus-shaped latency histogram of plain ints, cheap enough for the flush path.

The engine imports no metrics library: it counts into fixed buckets and the gateway
turns the counts into a histogram family when /metrics is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# Upper bounds in seconds, 0.5 ms to 5 s; slower observations land in +Inf only.
FLUSH_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class LatencyHistogram:
    """Observation counts per bucket (non-cumulative, the last one is +Inf), sum and count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = FLUSH_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation; `le` semantics, so a value equal to a bound is in it."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(`le` label, cumulative count) pairs ending with `+Inf`, as Prometheus wants."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def snapshot(self) -> dict[str, Any]:
        """The /v1/stats form: count, sum and the cumulative buckets by `le`."""
        return {"count": self.count, "sum": self.sum, "buckets": dict(self.cumulative())}

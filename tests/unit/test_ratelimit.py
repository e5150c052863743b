"""The token bucket, stepped with an explicit clock."""

from __future__ import annotations

import pytest

from shared.ratelimit import TokenBucket


def test_burst_then_steady_rate() -> None:
    b = TokenBucket(rate=10, burst=3)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.1)  # one token is 1/rate away
    assert b.take(0.1) == 0.0
    assert b.take(0.1) > 0


def test_refill_is_capped_at_burst_and_time_never_runs_backwards() -> None:
    b = TokenBucket(rate=1, burst=2)
    b.take(0.0)
    b.take(0.0)
    assert [b.take(100.0) for _ in range(3)][:2] == [0.0, 0.0]
    assert b.take(99.0) > 0  # an earlier `now` refills nothing


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)

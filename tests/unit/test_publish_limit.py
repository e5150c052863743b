"""The HTTP publish limiter: a token bucket per caller, bounded memory."""

from __future__ import annotations

import pytest

from gateway.publish_limit import PublishLimiter
from shared.config import Settings
from shared.errors import RateLimited


def test_buckets_are_per_caller_and_batches_cost_per_message() -> None:
    lim = PublishLimiter(rate=10, burst=5)
    lim.check("a", 5, 0.0)
    with pytest.raises(RateLimited) as info:
        lim.check("a", 1, 0.0)
    assert info.value.status == 429 and info.value.details["retry_after_s"] == 0.1
    lim.check("b", 500, 0.0)  # a batch over the burst still fits an idle bucket
    lim.check("a", 1, 0.1)


def test_idle_callers_are_forgotten() -> None:
    lim = PublishLimiter(rate=10, burst=5)
    lim.MAX_IDLE_CALLERS = 100
    for i in range(1000):
        lim.check(f"c{i}", 1, float(i))  # each caller idle for > burst/rate when the next comes
    assert len(lim._buckets) <= 100


def test_defaults_are_on_with_auth_and_off_in_dev_mode() -> None:
    assert Settings().publish_rate() is None
    assert Settings(api_keys=["k"]).publish_rate() == (1000.0, 2000)
    assert Settings(api_keys=["k"], http_publish_rate=0).publish_rate() is None
    assert Settings(http_publish_rate=5, http_publish_burst=7).publish_rate() == (5, 7)

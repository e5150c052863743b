"""Fixtures of the queue suite: a fake clock and a QueueService on each store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from queue_helpers import FakeClock, make_service

from fanout.queues import QueueService


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The session's private Redis, started only when a Redis-backed test needs it."""
    if backend != "redis":
        return ""
    return str(request.getfixturevalue("shared_redis").url)


@pytest.fixture
async def svc(
    backend: str, redis_url: str, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[QueueService]:
    service = make_service(backend, redis_url, tmp_path, clock)
    await service.start()
    try:
        yield service
    finally:
        await service.close()

"""Fixtures of the queue suite: a fake clock and a QueueService on each store.

Stores: SQLite, a single Redis, and a 3-master Redis Cluster (real redis-server
processes from tests/redis/redis_harness.py, started once per session, stopped by PID).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from queue_helpers import FakeClock, make_service
from redis_harness import RedisClusterServers

from fanout.queues import QueueService
from procs import running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def shared_redis_cluster() -> Iterator[RedisClusterServers]:
    """One private 3-master Redis Cluster for a whole session (tests use own namespaces)."""
    with running(cluster := RedisClusterServers()):
        yield cluster


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The session's private Redis (or Cluster), started only when a test needs it.

    The cluster URL is a plain `redis://` one to a node: cluster mode is detected.
    """
    if backend == "redis":
        return str(request.getfixturevalue("shared_redis").url)
    if backend == "redis-cluster":
        return str(request.getfixturevalue("shared_redis_cluster").url)
    return ""


@pytest.fixture
async def svc(
    backend: str, redis_url: str, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[QueueService]:
    service = make_service(backend.removesuffix("-cluster"), redis_url, tmp_path, clock)
    await service.start()
    try:
        yield service
    finally:
        await service.close()

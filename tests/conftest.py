from __future__ import annotations

from collections.abc import Iterator

import pytest

from procs import HeraldServer, RedisServer, running


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port, stopped by PID afterwards."""
    with running(server := RedisServer()):
        yield server


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One private redis-server for a whole session (tests flush their own keys)."""
    with running(server := RedisServer()):
        yield server


@pytest.fixture(scope="module")
def server() -> Iterator[HeraldServer]:
    """One `herald serve` (memory engine, dev mode) per test module; a module may
    override it with its own settings."""
    with running(s := HeraldServer()):
        yield s

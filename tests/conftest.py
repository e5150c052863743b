from __future__ import annotations

from collections.abc import Iterator

import pytest

from procs import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port, stopped by PID afterwards."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One private redis-server for a whole session (tests flush their own keys)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()

"""Real processes for integration tests: redis-server and `herald serve`.

The helpers live in loadtest/procs.py, shared with the benchmarks (tests may import the
harness; the product never does). This module re-exports them and adds the test clock.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable

from loadtest.procs import (
    PY,
    ROOT,
    HeraldServer,
    RedisServer,
    free_port,
    redis_binary,
    running,
    spawn,
    stop_all,
    stop_pid,
    wait_port,
)

__all__ = [
    "MS",
    "PY",
    "ROOT",
    "SCALE",
    "HeraldServer",
    "RedisServer",
    "free_port",
    "redis_binary",
    "running",
    "spawn",
    "stop_all",
    "stop_pid",
    "until",
    "wait_port",
]

# Durations in tests are multiples of MS, scaled on slow machines (HERALD_TEST_SCALE).
SCALE = float(os.environ.get("HERALD_TEST_SCALE", "1"))
MS = 0.001 * SCALE


async def until(check: Callable[[], object | Awaitable[object]], what: str = "the condition",
                timeout: float = 5000 * MS, every: float = 10 * MS) -> None:
    """Poll `check` (plain or async) until it returns something true; fail after `timeout`.

    Tests wait on state this way rather than sleeping a guessed time: fast when the
    machine is fast, and a clear message naming `what` when it never happens.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        await asyncio.sleep(every)

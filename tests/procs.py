"""Real processes for integration tests: redis-server and `herald serve`.

The helpers live in loadtest/procs.py, shared with the benchmarks (tests may import the
harness; the product never does). This module re-exports them and adds the test clock.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

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
    "after",
    "free_port",
    "herald_fixture",
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


async def until(
    check: Callable[[], object | Awaitable[object]],
    what: str = "the condition",
    timeout: float = 5000 * MS,
    every: float = 10 * MS,
) -> None:
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


def herald_fixture(env: dict[str, str] | None = None, *, clean_log: bool = False) -> Any:
    """A module-scoped pytest fixture: one `herald serve` with `env`, stopped by PID after
    the module. With `clean_log`, its log must then hold no traceback.

    Assign it to the fixture's name in the test module: `auth_server = herald_fixture(...)`.
    """

    @pytest.fixture(scope="module")
    def fixture() -> Iterator[HeraldServer]:
        with running(s := HeraldServer(env=dict(env or {}))):
            yield s
        if clean_log:
            assert "Traceback" not in s.output()

    return fixture


def after(delay: float, call: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """Run `call()` in a task once `delay` seconds have passed (e.g. a send that must
    wake a waiting receive); await the task to see its result or error."""

    async def run() -> Any:
        await asyncio.sleep(delay)
        return await call()

    return asyncio.create_task(run())

"""Real processes for integration tests: redis-server and `herald serve`.

The helpers live in loadtest/procs.py, shared with the benchmarks (tests may import the
harness; the product never does). This module re-exports them and adds the test clock.
"""

from __future__ import annotations

import os

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
    "wait_port",
]

# Durations in tests are multiples of MS, scaled on slow machines (HERALD_TEST_SCALE).
SCALE = float(os.environ.get("HERALD_TEST_SCALE", "1"))
MS = 0.001 * SCALE

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

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


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright (`playwright install` cannot
    download browsers here, so executable_path points at the system one)."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise RuntimeError("chromium is not installed; run `make test` (it installs it)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()

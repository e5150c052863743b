"""Gateways and browser pages for the tests of /demo/scores and /admin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pagekit import DESKTOP, redis_gateway

from procs import HeraldServer, RedisServer, running


@pytest.fixture(scope="module")
def pods() -> Iterator[tuple[HeraldServer, HeraldServer, RedisServer]]:
    """Two dev-mode gateways (A, B) sharing one private Redis."""
    redis = RedisServer()
    a, b = redis_gateway(redis), redis_gateway(redis)
    with running(redis, a, b):
        yield a, b, redis


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A desktop-sized page; fails the test on any uncaught page error."""
    context = browser.new_context(viewport=DESKTOP)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()
    assert not errors, errors

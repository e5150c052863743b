"""Helpers of the browser tests of /demo/scores and /admin (fixtures: conftest.py)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx
from playwright.sync_api import expect

from procs import ROOT, HeraldServer, RedisServer

HISTORY = '[{"pattern": "game.>", "size": 1000}]'
IMG = ROOT / "docs" / "img"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
# Shared CI machines are slow: waiting longer costs nothing when things work.
expect.set_options(timeout=15_000)


def redis_gateway(redis: RedisServer, **env: str) -> HeraldServer:
    """A `herald serve` on the redis engine, with history on `game.>`."""
    return HeraldServer(
        env={
            "HERALD_ENGINE": "redis",
            "HERALD_REDIS_URL": redis.url,
            "HERALD_HISTORY": HISTORY,
            **env,
        }
    )


def wait_until(check: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def presence(gw: HeraldServer, topic: str, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"{gw.http}/v1/topics/{quote(topic, safe='')}/presence", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_subscribed(gw: HeraldServer, topic: str, token: str | None = None) -> dict[str, Any]:
    """Until some pod reports a subscription receiving `topic` (presence, all pods)."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: (p := presence(gw, topic, token))["subscribers"] >= 1 and p,
        f"a subscriber of {topic}",
    )


def screenshot(page: Any, name: str) -> None:
    """docs/img/<name>-desktop.png and <name>-phone.png; the phone layout must not
    scroll sideways."""
    IMG.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(IMG / f"{name}-desktop.png"), animations="disabled")
    page.set_viewport_size(PHONE)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the phone layout is {overflow}px wider than the screen"
    page.screenshot(path=str(IMG / f"{name}-phone.png"), animations="disabled")
    page.set_viewport_size(DESKTOP)

"""Acceptance of the live scores page (/demo/scores) in headless Chromium against
real gateways on the redis engine (issue 13)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest
from pagekit import presence, redis_gateway, screenshot, wait_subscribed, wait_until
from playwright.sync_api import expect

from procs import ROOT, HeraldServer, RedisServer, running

pytestmark = pytest.mark.integration

Pods = tuple[HeraldServer, HeraldServer, RedisServer]


def score(game: str, home: int, away: int = 0, minute: int = 1) -> dict[str, Any]:
    """A score event as docs/demo.md documents it."""
    return {
        "topic": f"game.{game}.score",
        "attributes": {"gameId": game},
        "data": {
            "home": "Home",
            "away": "Away",
            "homeScore": home,
            "awayScore": away,
            "minute": minute,
        },
    }


def publish(gw: HeraldServer, *events: dict[str, Any]) -> None:
    if len(events) == 1:
        r = httpx.post(f"{gw.http}/v1/publish", json=events[0])
    else:
        r = httpx.post(f"{gw.http}/v1/publish/batch", json={"messages": list(events)})
    assert r.status_code == 202, r.text
    assert all("error" not in res for res in r.json().get("results", [])), r.text


def card(page: Any, game: str) -> Any:
    return page.get_by_role("list", name="Scoreboard").get_by_role("listitem", name=f"Game {game}")


def shows(home: int, away: int) -> re.Pattern[str]:
    return re.compile(rf"Home\s*{home}\s*Away\s*{away}\b")


def connection(page: Any) -> Any:
    return page.get_by_role("status", name="Connection")


def test_followed_game_shows_and_others_never(pods: Pods, page: Any) -> None:
    a, b, _ = pods
    page.goto(f"{b.http}/demo/scores?games=g42&batch_ms=300")
    expect(connection(page)).to_have_text("connected")
    # The page is on B; A counts it through the presence every pod writes to Redis.
    seen = wait_subscribed(a, "game.g42.score")
    assert seen["subscribers"] == 1 and seen["patterns"] == {"game.*.score": 1}
    assert seen["pods"] == 2

    publish(a, score("g43", 5))
    publish(a, score("g42", 2, 1))
    expect(card(page, "g42")).to_contain_text(shows(2, 1))
    publish(a, score("g43", 6))
    publish(a, score("g42", 3, 1))
    expect(card(page, "g42")).to_contain_text(shows(3, 1))
    expect(card(page, "g43")).to_have_count(0)
    expect(page.get_by_role("list", name="Scoreboard").get_by_role("listitem")).to_have_count(1)

    # The picker narrows to other games, and the URL follows.
    page.get_by_label("Games to follow").fill("g43")
    page.get_by_role("button", name="Follow", exact=True).click()
    expect(card(page, "g42")).to_have_count(0)
    assert "games=g43" in page.url

    def g43_shown() -> bool:  # publish both until the new subscription is live
        publish(a, score("g42", 4, 1))
        publish(a, score("g43", 7))
        return bool(card(page, "g43").count())

    wait_until(g43_shown, "g43 on the board")
    expect(card(page, "g43")).to_contain_text(shows(7, 0))
    expect(card(page, "g42")).to_have_count(0)


def test_rapid_updates_of_one_game_render_once_with_the_latest(pods: Pods, page: Any) -> None:
    a, b, _ = pods
    page.goto(f"{b.http}/demo/scores?games=g7&batch_ms=1000")
    expect(connection(page)).to_have_text("connected")
    wait_subscribed(a, "game.g7.score")
    publish(a, score("g7", 0))
    expect(card(page, "g7")).to_contain_text("render 1 ·")
    received = int(page.locator("#received").inner_text())

    # Ten updates in one request land in one batch window of the server.
    publish(a, *(score("g7", n, minute=n) for n in range(1, 11)))
    expect(card(page, "g7")).to_contain_text("render 2 · 10 updates coalesced")
    expect(card(page, "g7")).to_contain_text(shows(10, 0))
    # The server sent one message, not ten (mode latest, keyed by gameId).
    assert int(page.locator("#received").inner_text()) == received + 1


def test_drain_reconnects_and_catches_up_without_missing_a_goal(pods: Pods, page: Any) -> None:
    a, b, redis = pods
    c = redis_gateway(redis, HERALD_DRAIN_TIMEOUT="1").start()
    assert b.proc is not None
    frozen = False
    try:
        # Served by B, connected to C first; B is the gateway left after C drains.
        page.goto(f"{b.http}/demo/scores?games=g9&batch_ms=100&ws={c.ws},{b.ws}")
        expect(connection(page)).to_have_text("connected")
        wait_subscribed(a, "game.g9.score")
        publish(a, score("g9", 1))
        expect(card(page, "g9")).to_contain_text(shows(1, 0))

        # Freeze B so that the page stays disconnected while a goal is scored: it
        # can only learn of that goal from the history (B resumes a moment later).
        os.kill(b.proc.pid, signal.SIGSTOP)
        frozen = True
        assert c.proc is not None
        c.proc.send_signal(signal.SIGTERM)
        expect(connection(page)).to_have_text("reconnecting")
        publish(a, score("g9", 2, minute=50))
        os.kill(b.proc.pid, signal.SIGCONT)
        frozen = False

        expect(connection(page)).to_have_text("resumed")
        expect(card(page, "g9")).to_contain_text(shows(2, 0))
        publish(a, score("g9", 3, minute=51))
        expect(card(page, "g9")).to_contain_text(shows(3, 0))
        # uvicorn ends by re-raising SIGTERM once the drain is done.
        assert c.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        if frozen:
            os.kill(b.proc.pid, signal.SIGCONT)
        c.stop()


def test_herald_demo_moves_the_board_on_desktop_and_phone(pods: Pods, page: Any) -> None:
    a, b, _ = pods
    page.goto(f"{b.http}/demo/scores?batch_ms=500")
    expect(connection(page)).to_have_text("connected")
    wait_subscribed(a, "game.g1.score")
    args = ["--games", "6", "--rate", "40", "--duration", "3", "--seed", "13", "--url", a.http]
    demo = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 0, demo.stderr
    assert re.search(r"published 1[0-9]{2} updates", demo.stderr), demo.stderr
    expect(page.get_by_role("list", name="Scoreboard").get_by_role("listitem")).to_have_count(6)
    wait_until(lambda: int(page.locator("#renders").inner_text()) >= 3, "a few renders")
    screenshot(page, "scores")


def test_reconnect_without_history_shows_resumed_with_a_gap(pods: Pods, page: Any) -> None:
    _, _, redis = pods
    # No history rule: messages carry no offsets, so the page cannot know what it missed.
    e, f = (redis_gateway(redis, HERALD_HISTORY="[]", HERALD_DRAIN_TIMEOUT="1") for _ in "ef")
    with running(e, f):
        page.goto(f"{f.http}/demo/scores?games=g5&batch_ms=100&ws={e.ws},{f.ws}")
        expect(connection(page)).to_have_text("connected")
        wait_subscribed(f, "game.g5.score")
        publish(f, score("g5", 1))
        expect(card(page, "g5")).to_contain_text(shows(1, 0))
        assert wait_subscribed(f, "game.g5.score")["pods"] == 4  # A, B, E, F
        e.stop()
        # A stopped pod leaves the presence at once, not when its entry expires.
        assert presence(f, "game.g5.score")["pods"] == 3
        expect(connection(page)).to_have_text("resumed with a gap")
        publish(f, score("g5", 2))
        expect(card(page, "g5")).to_contain_text(shows(2, 0))

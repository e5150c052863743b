"""Presence counts (hub snapshot, per-topic sums) and the `herald demo` simulation."""

from __future__ import annotations

import random

from test_hub import FakeSink, msg, shape

from fanout.hub import Hub
from fanout.presence import PatternPresence, PresenceSnapshot
from gateway.demo import Game, new_games, score_message


def test_hub_presence_counts_subscriptions_and_matched_messages() -> None:
    hub = Hub()
    a, b, c = FakeSink(), FakeSink(), FakeSink()
    hub.subscribe(a, shape("game.*.score"))
    hub.subscribe(b, shape("game.*.score", {"gameId": ["g1"]}))  # same pattern, other group
    hub.subscribe(c, shape("game.g1.score"))
    hub.dispatch(msg("game.g1.score", 1, gameId="g1"), 0.0)
    hub.dispatch(msg("game.g2.score", 2, gameId="g2"), 0.0)
    # The filtered group matched one message, the unfiltered one two.
    assert hub.presence() == {"game.*.score": (2, 3), "game.g1.score": (1, 1)}
    hub.remove_sink(b)
    hub.remove_sink(c)
    assert hub.presence() == {"game.*.score": (1, 2)}


def test_snapshot_for_topic_sums_matching_patterns_or_one_pattern() -> None:
    snap = PresenceSnapshot(
        pods=2,
        patterns={
            "game.*.score": PatternPresence(3, 0),
            "game.>": PatternPresence(1, 0),
            "game.g1.score": PatternPresence(2, 0),
            "news.>": PatternPresence(5, 0),
        },
    )
    assert snap.for_topic("game.g1.score") == (
        6,
        {"game.*.score": 3, "game.>": 1, "game.g1.score": 2},
    )
    assert snap.for_topic("game.g2.score") == (4, {"game.*.score": 3, "game.>": 1})
    assert snap.for_topic("game.*.score") == (3, {"game.*.score": 3})
    assert snap.for_topic("sport.>") == (0, {})


def test_demo_games_follow_the_documented_score_shape() -> None:
    rng = random.Random(7)
    games = new_games(3, rng)
    assert [g.id for g in games] == ["g1", "g2", "g3"]
    kinds = set()
    for _ in range(500):
        g = rng.choice(games)
        before = (g.home_score, g.away_score, g.minute)
        body = score_message(g, g.step(rng))
        data = body["data"]
        assert body["topic"] == f"game.{g.id}.score" and body["attributes"] == {"gameId": g.id}
        assert {"home", "away", "homeScore", "awayScore", "minute"} <= data.keys()
        kind = data["event"]["type"]
        kinds.add(kind)
        goals = data["homeScore"] + data["awayScore"] - before[0] - before[1]
        if kind == "goal":
            assert goals == 1 and data["minute"] == before[2]
        elif kind == "tick":
            assert goals == 0 and data["minute"] == before[2] + 1
        elif kind == "kickoff":
            assert (data["homeScore"], data["awayScore"], data["minute"]) == (0, 0, 0)
        assert 0 <= data["minute"] <= 90
    assert {"goal", "card", "tick"} <= kinds


def test_demo_game_restarts_after_full_time() -> None:
    g = Game("g1", "A", "B", home_score=2, minute=90)
    assert g.step(random.Random(1))["event"] == {"type": "kickoff"}
    assert (g.home_score, g.away_score, g.minute) == (0, 0, 0)

"""`herald demo`: simulated football games publishing score events over HTTP.

Each update is published to `game.{gameId}.score` with attributes `{"gameId"}` and
data `{home, away, homeScore, awayScore, minute, event}` (docs/demo.md), so that
`make run` plus `herald demo` moves the board at `/demo/scores`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

TEAMS = (
    "Lions", "Tigers", "Eagles", "Wolves", "Bears", "Sharks", "Falcons", "Hawks",
    "Rovers", "United", "Athletic", "Rangers", "City", "Wanderers", "Albion", "County",
)  # fmt: skip


@dataclass
class Game:
    """One simulated game: the clock runs to 90', then a new kick-off."""

    id: str
    home: str
    away: str
    home_score: int = 0
    away_score: int = 0
    minute: int = 0

    def step(self, rng: random.Random) -> dict[str, Any]:
        """Advance by one event (a clock tick, a goal or a card); the new state."""
        roll = rng.random()
        side = rng.choice(("home", "away"))
        event: dict[str, Any]
        if self.minute >= 90:
            self.home_score = self.away_score = self.minute = 0
            event = {"type": "kickoff"}
        elif roll < 0.2:
            if side == "home":
                self.home_score += 1
            else:
                self.away_score += 1
            event = {"type": "goal", "team": side}
        elif roll < 0.3:
            event = {"type": "card", "team": side, "card": rng.choice(("yellow", "yellow", "red"))}
        else:
            self.minute += 1
            event = {"type": "tick"}
        return {
            "home": self.home,
            "away": self.away,
            "homeScore": self.home_score,
            "awayScore": self.away_score,
            "minute": self.minute,
            "event": event,
        }


def new_games(count: int, rng: random.Random) -> list[Game]:
    """`count` games with ids g1..gN, random pairings and a random clock."""
    games = []
    for i in range(count):
        home, away = rng.sample(TEAMS, 2)
        games.append(Game(f"g{i + 1}", home, away, minute=rng.randrange(0, 80)))
    return games


def score_message(game: Game, data: dict[str, Any]) -> dict[str, Any]:
    """The publish body of one score event."""
    return {"topic": f"game.{game.id}.score", "data": data, "attributes": {"gameId": game.id}}


def run(
    url: str,
    games: int,
    rate: float,
    duration: float,
    token: str | None,
    seed: int | None,
    echo: Any = print,
) -> int:
    """Publish `rate` updates per second over `games` games for `duration` s (0: forever).

    Returns how many were published. Publish errors are reported and the run goes on
    (a gateway restart must not end a demo).
    """
    rng = random.Random(seed)
    board = new_games(games, rng)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    interval = 1.0 / rate
    sent = 0
    start = time.monotonic()
    next_at = start
    with httpx.Client(base_url=url, headers=headers, timeout=5) as http:
        while not duration or time.monotonic() - start < duration:
            game = rng.choice(board)
            body = score_message(game, game.step(rng))
            try:
                r = http.post("/v1/publish", json=body)
                if r.status_code >= 400:
                    echo(f"publish {body['topic']}: HTTP {r.status_code} {r.text}")
                else:
                    sent += 1
            except httpx.HTTPError as exc:
                echo(f"publish {body['topic']}: {exc}")
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    return sent

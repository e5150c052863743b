"""The Python client's pure parts: backoff bounds, JWT exp, resume commands, dedup,
and the idempotency store's claim states. No network."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from herald_client import HeraldClient, SQLiteIdempotency, jwt_exp
from herald_client.subscription import Subscription


def fake_jwt(claims: dict[str, object]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{body}.sig"


def test_full_jitter_backoff_stays_within_its_bounds() -> None:
    client = HeraldClient("ws://x/ws", min_backoff=0.5, max_backoff=4)
    for failures in range(0, 40):
        cap = min(4, 0.5 * 2**failures)
        delays = [client.backoff(failures) for _ in range(50)]
        assert all(0 <= d <= cap for d in delays)
    # Jittered: not one fixed value.
    assert len({client.backoff(10) for _ in range(20)}) > 1


def test_jwt_exp_reads_the_claim_and_ignores_other_tokens() -> None:
    assert jwt_exp(fake_jwt({"sub": "a", "exp": 1700000000})) == 1700000000
    assert jwt_exp(fake_jwt({"sub": "a"})) is None
    assert jwt_exp("an-api-key") is None
    assert jwt_exp("a.b!.c") is None
    assert jwt_exp(None) is None


def sub(pattern: str, **kw: object) -> Subscription:
    return Subscription(HeraldClient("ws://x/ws"), pattern, dict(kw), None, None, None)


def test_resubscribe_sends_since_and_epoch_only_for_concrete_topics() -> None:
    s = sub("game.1.score")
    s.on_subscribed({"sub": "k", "epoch": "e1", "offset": 7}, {"op": "subscribe"}, False)
    assert s.command(True) == {
        "op": "subscribe",
        "topic": "game.1.score",
        "since": 7,
        "epoch": "e1",
    }
    s.deliver({"offset": 8, "data": 1})
    assert s.command(True)["since"] == 8
    w = sub("game.*.score", filter={"a": ["b"]})
    w.on_subscribed({"sub": "k"}, {"op": "subscribe"}, False)
    assert w.command(True) == {"op": "subscribe", "topic": "game.*.score", "filter": {"a": ["b"]}}
    latest = sub("game.1.score", mode="latest")
    latest.on_subscribed({"sub": "k", "epoch": "e", "offset": 3}, {"op": "subscribe"}, False)
    assert "since" not in latest.command(True)


def test_replayed_offsets_are_delivered_once_and_wildcards_never_compare_offsets() -> None:
    s = sub("t.1")
    s.on_subscribed({"sub": "k", "epoch": "e", "offset": 0}, {"op": "subscribe"}, False)
    delivered = [s.deliver({"offset": o}) for o in (1, 2, 2, 1, 3)]
    assert delivered == [True, True, False, False, True]
    w = sub("t.*")
    assert [w.deliver({"offset": o}) for o in (5, 1, 5)] == [True, True, True]


def test_a_resume_that_did_not_recover_reports_it_and_restarts_dedup() -> None:
    s = sub("t.1")
    events: list[tuple[str, dict[str, object]]] = []
    s.on_any(lambda name, info: events.append((name, info)))
    s.on_subscribed({"sub": "k", "epoch": "e1", "offset": 5}, {"op": "subscribe"}, False)
    s.deliver({"offset": 6})
    cmd = s.command(True)
    s.on_subscribed({"sub": "k", "epoch": "e2", "offset": 1, "recovered": False}, cmd, True)
    assert ("recovered", events[-1][1]) == events[-1] and events[-1][1]["recovered"] is False
    assert s.deliver({"offset": 2})  # a new epoch: offset 2 is new, not a duplicate


async def test_sqlite_store_claims_new_then_busy_then_done(tmp_path: Path) -> None:
    store = SQLiteIdempotency(tmp_path / "d.db")
    assert await store.claim("k", 60) == "new"
    assert await store.claim("k", 60) == "busy"
    await store.release("k")
    assert await store.claim("k", 60) == "new"
    await store.complete("k")
    assert await store.claim("k", 60) == "done"
    assert await store.claim("expired", -1) == "new"
    assert await store.claim("expired", 60) == "new"  # a crashed worker's claim lapsed
    store.close()

"""`QueueService.peek` (GET /v1/queues/{name}/peek) on every store: the oldest
messages, in flight or not, and nothing about them changes."""

from __future__ import annotations

import pytest
from queue_helpers import FakeClock

from fanout.queues import QueueService
from shared.errors import InvalidRequest, QueueNotFound


async def test_peek_is_read_only_and_oldest_first(svc: QueueService, clock: FakeClock) -> None:
    await svc.create_or_update("dlq", {})
    await svc.create_or_update("work", {"dead_letter": {"queue": "dlq", "max_receive_count": 1}})
    first = await svc.send("work", {"body": {"n": 1}, "attributes": {"k": "v"}})
    clock.advance(0.01)  # peek orders by arrival time (ms)
    await svc.send("work", {"body": {"n": 2}})
    [claimed] = await svc.receive("work", visibility_timeout=0)  # n=1 received once
    before = await svc.get("work")

    peeked = await svc.peek("work", 10)
    assert [m["body"] for m in peeked] == [{"n": 1}, {"n": 2}]
    assert peeked[0]["id"] == first["id"] and peeked[0]["attributes"] == {"k": "v"}
    assert peeked[0]["receive_count"] == 1 and peeked[0]["source"] is None
    assert "receipt" not in peeked[0]
    assert await svc.peek("work", 1) == peeked[:1]
    after = await svc.get("work")
    assert {k: after[k] for k in ("visible", "in_flight", "received_total")} == {
        k: before[k] for k in ("visible", "in_flight", "received_total")
    }
    # Peeking did not count as a receive: the next receive is the second, so n=1
    # (max_receive_count 1) moves to the dead-letter queue, where peek shows its source.
    assert claimed["receive_count"] == 1
    got = await svc.receive("work", max=10, visibility_timeout=30)
    assert [m["body"] for m in got] == [{"n": 2}]
    [dead] = await svc.peek("dlq", 10)
    assert dead["id"] == first["id"] and dead["source"] == "work"


async def test_peek_errors(svc: QueueService) -> None:
    with pytest.raises(QueueNotFound):
        await svc.peek("missing", 10)
    await svc.create_or_update("q", {})
    assert await svc.peek("q", 10) == []
    with pytest.raises(InvalidRequest):
        await svc.peek("q", 0)

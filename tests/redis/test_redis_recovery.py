"""Recovery (fanout/redis/recovery.py): filling a history topic's outage gap.

Sans-I/O: the history reads are plain functions over a list, so every case of the
replay (same stream, trimmed, Redis lost the history) is checked without Redis.
"""

from __future__ import annotations

from fanout.backplane import HistoryPage
from fanout.message import Message
from fanout.redis import keys
from fanout.redis.recovery import HOLD_MAX, ReadHistory, Recovery

LOST = {keys.topic_channel("t.a")}


def msg(offset: int, *, ts: int = 1000, msg_id: str | None = None) -> Message:
    return Message.build("t.a", msg_id or f"m{offset}", ts, offset, None, offset)


def history(epoch: str, msgs: list[Message], latest: int | None = None) -> ReadHistory:
    """A history read over `msgs` (offsets ascending), like the backplane's."""

    async def read(since: int) -> HistoryPage:
        after = [m for m in msgs if m.offset is not None and m.offset > since]
        top = latest if latest is not None else (msgs[-1].offset or 0 if msgs else 0)
        return HistoryPage(epoch, after, True, top)

    return read


def offsets(msgs: list[Message]) -> list[int | None]:
    return [m.offset for m in msgs]


async def test_replays_the_gap_then_the_held_messages_once() -> None:
    r = Recovery()
    r.on_live([msg(1), msg(2)])
    r.hold(LOST, now_ms=5000)
    # Resubscribed: live messages arrive before the replay is done; 4 is also in history.
    assert r.on_live([msg(4), msg(5)]) == []
    out, gap = await r.recover("t.a", history("e1", [msg(i) for i in range(1, 5)]))
    assert offsets(out) == [3, 4, 5] and gap is None
    assert not r.held and r.marks["t.a"].offset == 5
    assert offsets(r.on_live([msg(6)])) == [6]  # live again


async def test_a_trimmed_gap_is_reported_with_its_size() -> None:
    r = Recovery()
    r.on_live([msg(1)])
    r.hold(LOST, now_ms=5000)
    out, gap = await r.recover("t.a", history("e1", [msg(i) for i in range(5, 8)]))
    assert offsets(out) == [5, 6, 7] and gap == 3  # 2, 3 and 4 were trimmed


async def test_a_history_position_without_a_message_uses_the_epoch() -> None:
    r = Recovery()
    r.position("t.a", "e1", 2)  # a subscriber's resume read: epoch e1, offset 2
    r.hold(LOST, now_ms=5000)
    out, gap = await r.recover("t.a", history("e1", [msg(i) for i in range(1, 5)]))
    assert offsets(out) == [3, 4] and gap is None


async def test_lost_history_delivers_what_came_after_the_loss_and_reports_a_gap() -> None:
    r = Recovery()
    r.on_live([msg(7)])
    r.hold(LOST, now_ms=5000)
    # Redis restarted empty: a new stream whose offset 7 is another message.
    fresh = [msg(i, ts=6000, msg_id=f"new{i}") for i in range(1, 8)]
    out, gap = await r.recover("t.a", history("e2", fresh))
    assert [m.id for m in out] == [f"new{i}" for i in range(1, 8)] and gap == 0
    assert r.marks["t.a"].epoch == "e2" and r.marks["t.a"].msg_id == "new7"


async def test_only_topics_of_lost_channels_are_held_and_holds_are_bounded() -> None:
    r = Recovery()
    other = Message.build("u.b", "x", 1, 0, None, 1)
    r.on_live([msg(1), other])
    r.hold({keys.prefix_channel("t")}, now_ms=5000)  # a wildcard's channel over t.a
    assert set(r.held) == {"t.a"}
    assert r.on_live([other]) == [other]
    r.on_live([msg(i) for i in range(2, HOLD_MAX + 100)])
    assert len(r.held["t.a"].msgs) == HOLD_MAX  # the rest is in history anyway

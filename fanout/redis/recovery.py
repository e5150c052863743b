"""Closing the gap a pub/sub outage leaves in history topics.

While a pod's subscription is lost (Redis restarted, a connection dropped, a
cluster slot moved), other pods can still publish: those messages never reach
this pod's subscribers. For history topics the gap can be filled. This module
keeps, per history topic this pod delivered, its position (`Mark`: offset, and
the epoch or the id of the message at that offset). When subscriptions are lost
it holds back the live messages of the affected topics; once they are restored,
`recover` reads history after the mark, and returns the missed messages followed
by the held ones that history did not cover, oldest first, without duplicates.

Where the gap cannot be filled (history trimmed past the mark, or Redis lost the
topic's history so the epoch changed), `recover` also returns how many messages
were lost (0 when that is unknown), and the backplane reports a gap, which the
hub turns into a `lagged` notice. See docs/redis.md ("Failure and recovery").

Sans-I/O but for `recover`, which awaits the history reads it is given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from fanout.backplane import HistoryPage
from fanout.message import Message
from fanout.redis import keys

MAX_MARKS = 10_000  # history topics whose position a pod remembers
HOLD_MAX = 10_000  # live messages held per topic while it recovers (history has them)
REPLAY_LIMIT = 10_000  # messages replayed per topic after one outage

ReadHistory = Callable[[int], Awaitable[HistoryPage]]


@dataclass(slots=True)
class Mark:
    """The last message of a topic this pod delivered (or the latest offset it read)."""

    offset: int
    epoch: str | None = None  # known from a history read
    msg_id: str | None = None  # the id of the message at `offset`, when delivered here


@dataclass(slots=True)
class Hold:
    """Live messages of a topic held back while its gap is filled."""

    since_ms: int  # wall clock when the subscription was lost
    msgs: list[Message] = field(default_factory=list)


class Recovery:
    """Positions of history topics, and the topics waiting for a replay."""

    def __init__(self) -> None:
        self.marks: dict[str, Mark] = {}
        self.held: dict[str, Hold] = {}

    # ---- positions ---------------------------------------------------------------

    def on_live(self, msgs: list[Message]) -> list[Message]:
        """Note delivered history messages; hold those of recovering topics back."""
        held = self.held
        if not held:
            for m in msgs:
                if m.offset is not None:
                    self._advance(m)
            return msgs
        out: list[Message] = []
        for m in msgs:
            hold = held.get(m.topic)
            if hold is not None:
                # Past the cap, history still has it: it arrived before the read.
                if len(hold.msgs) < HOLD_MAX:
                    hold.msgs.append(m)
                continue
            if m.offset is not None:
                self._advance(m)
            out.append(m)
        return out

    def _advance(self, m: Message) -> None:
        assert m.offset is not None
        mark = self.marks.get(m.topic)
        if mark is None:
            if len(self.marks) >= MAX_MARKS:
                del self.marks[next(iter(self.marks))]
            self.marks[m.topic] = Mark(m.offset, None, m.id)
        elif m.offset >= mark.offset:
            mark.offset = m.offset
            mark.msg_id = m.id

    def position(self, topic: str, epoch: str, latest: int) -> None:
        """A history read of a topic this pod watches: where it stands now."""
        if topic in self.held:
            return  # `recover` sets the mark when it is done
        mark = self.marks.get(topic)
        if mark is None or (mark.epoch is not None and mark.epoch != epoch):
            if mark is None and len(self.marks) >= MAX_MARKS:
                del self.marks[next(iter(self.marks))]
            self.marks[topic] = Mark(latest, epoch)
            return
        mark.epoch = epoch
        if latest > mark.offset:
            mark.offset = latest
            mark.msg_id = None

    # ---- outages -------------------------------------------------------------------

    def hold(self, lost: Iterable[bytes], now_ms: int) -> None:
        """Subscriptions of these channels were lost: hold every topic they carried."""
        lost = set(lost)
        for topic in self.marks:
            if topic in self.held:
                continue
            if keys.topic_channel(topic) in lost or any(
                keys.prefix_channel(p) in lost for p in keys.topic_prefixes(topic)
            ):
                self.held[topic] = Hold(now_ms)

    def release(self, topic: str) -> list[Message]:
        """Stop holding `topic` without a replay; the held messages, to deliver."""
        hold = self.held.pop(topic, None)
        return hold.msgs if hold is not None else []

    async def recover(self, topic: str, read: ReadHistory) -> tuple[list[Message], int | None]:
        """Fill `topic`'s gap: (messages to deliver, oldest first; lost count or None).

        `read(since)` returns history after offset `since`. The hold ends in the turn
        in which the last read returned, so no live message falls between the two.
        """
        mark = self.marks.get(topic)
        if mark is None:
            return self.release(topic), None
        # Read from the mark's own message when its id is known: finding it again
        # proves the offsets still count the same stream.
        check = mark.msg_id is not None and mark.offset > 0
        since = mark.offset - 1 if check else mark.offset
        page = await read(since)
        replay = page.messages
        broken = (mark.epoch is not None and page.epoch != mark.epoch) or page.latest < mark.offset
        if not broken and check and replay and replay[0].offset == mark.offset:
            if replay[0].id != mark.msg_id:
                broken = True
            else:
                replay = replay[1:]
        if broken:
            # Redis lost the topic's history: its offsets count again from 1. What
            # was published after the subscription was lost is new to this pod; what
            # came between the mark and the loss cannot be known.
            page = await read(0)
            floor = page.messages[-1].offset if page.messages else page.latest
            hold = self.held.pop(topic, Hold(0))
            replay = [m for m in page.messages if m.ts >= hold.since_ms]
            dropped: int | None = 0
        else:
            floor = replay[-1].offset if replay else mark.offset
            hold = self.held.pop(topic, Hold(0))
            missing = page.latest - mark.offset - len(replay)  # trimmed, or over the limit
            dropped = missing if missing > 0 else None
        assert floor is not None
        out = replay + [m for m in hold.msgs if m.offset is None or m.offset > floor]
        last = next((m for m in reversed(out) if m.offset is not None), None)
        if last is not None:
            assert last.offset is not None
            self.marks[topic] = Mark(last.offset, page.epoch, last.id)
        elif broken:
            self.marks[topic] = Mark(page.latest, page.epoch)
        else:
            mark.epoch = page.epoch
        return out, dropped

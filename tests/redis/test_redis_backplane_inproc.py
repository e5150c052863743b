"""RedisBackplane objects in this process against a real private redis-server.

Faster and more exhaustive than the multi-process tests: history semantics are
compared call by call with the memory engine, and subscription bookkeeping is
hammered with concurrent and flapping interest.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest

from fanout.backplane import PublishItem
from fanout.memory import MemoryBackplane
from fanout.message import Message
from fanout.redis import keys
from fanout.redis.backplane import RedisBackplane
from procs import RedisServer
from shared.config import HistoryRule
from shared.errors import BackplaneUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture
async def backplane(shared_redis: RedisServer) -> AsyncIterator[RedisBackplane]:
    shared_redis.cli("FLUSHALL")
    bp = RedisBackplane(shared_redis.url)
    await bp.start(lambda msgs: None)
    assert bp.ready()
    try:
        yield bp
    finally:
        await bp.close()


def channels(redis: RedisServer) -> set[bytes]:
    return {c.encode() for c in redis.cli("PUBSUB", "CHANNELS").splitlines() if c}


async def until(check: object, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.02)


async def test_history_matches_memory_engine(backplane: RedisBackplane) -> None:
    memory = MemoryBackplane()
    await memory.start(lambda msgs: None)
    now = int(time.time() * 1000)
    cases = [
        (HistoryRule(pattern="t.>", size=5), [0] * 12),
        (HistoryRule(pattern="t.>", ttl=5), [-9000] * 4 + [-1000] * 3),
        (HistoryRule(pattern="t.>", size=3, ttl=5), [-9000, -8000, -1000, -500, -100, 0]),
        (HistoryRule(pattern="t.>", ttl=5), [-9000, -9000]),  # everything expired
    ]
    for n, (rule, ages) in enumerate(cases):
        topic = f"t.case{n}"
        for i, age in enumerate(ages):
            item = PublishItem(Message.build(topic, f"m{i}", now + age, {"i": i}, None), rule)
            (mine,) = await memory.publish([item])
            (theirs,) = await backplane.publish([item])
            assert (mine.id, mine.offset) == (theirs.id, theirs.offset)
        latest = len(ages)
        epochs = set()
        for since in (None, 0, 1, 2, latest - 3, latest - 1, latest, latest + 1):
            for limit in (0, 1, 2, 100):
                a = await memory.history(topic, rule, since, limit)
                b = await backplane.history(topic, rule, since, limit)
                epochs.add(b.epoch)
                case = f"case {n} since={since} limit={limit}"
                assert [m.envelope for m in a.messages] == [m.envelope for m in b.messages], case
                assert (a.complete, a.latest) == (b.complete, b.latest), case
        assert len(epochs) == 1


async def test_history_read_first_fixes_the_epoch(backplane: RedisBackplane) -> None:
    rule = HistoryRule(pattern="e.>", size=10)
    page = await backplane.history("e.x", rule, None, 0)
    assert page.epoch and page.latest == 0
    await backplane.publish([PublishItem(Message.build("e.x", "a", 1, 1, None), rule)])
    again = await backplane.history("e.x", rule, 0, 10)
    assert again.epoch == page.epoch and again.complete and again.latest == 1


async def test_lost_history_draws_a_new_epoch(
    backplane: RedisBackplane, shared_redis: RedisServer
) -> None:
    rule = HistoryRule(pattern="l.>", size=10)
    item = PublishItem(Message.build("l.x", "a", int(time.time() * 1000), 1, None), rule)
    await backplane.publish([item, item])
    before = await backplane.history("l.x", rule, 0, 10)
    shared_redis.cli("DEL", keys.history_key("l.x"))  # e.g. evicted
    after = await backplane.history("l.x", rule, 0, 10)
    assert after.epoch != before.epoch
    assert (await backplane.publish([item]))[0].offset == 3  # offsets keep counting


async def test_idempotency_and_forget(backplane: RedisBackplane) -> None:
    rule = HistoryRule(pattern="i.>", size=10)

    def item(topic: str, rule: HistoryRule | None) -> PublishItem:
        return PublishItem(Message.build(topic, "same", 1, 1, None), rule, idempotent=True)

    first = await backplane.publish([item("i.x", rule)])
    dup = await backplane.publish([item("i.x", rule)])
    assert dup[0].duplicate and dup[0].offset == first[0].offset == 1
    await backplane.forget("i.x", "same")
    again = await backplane.publish([item("i.x", rule)])
    assert not again[0].duplicate and again[0].offset == 2
    # Without history: no offset, still deduplicated (per topic).
    plain = await backplane.publish([item("j.x", None), item("j.x", None), item("j.y", None)])
    assert [(o.offset, o.duplicate) for o in plain] == [(None, False), (None, True), (None, False)]


async def test_flapping_and_concurrent_interest_converges(
    backplane: RedisBackplane, shared_redis: RedisServer
) -> None:
    patterns = [f"f.{i}" for i in range(20)] + [f"g.{i}.*" for i in range(10)] + ["*.z"]
    counts = dict.fromkeys(patterns, 0)
    rnd = random.Random(7)

    async def churn(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(200):
            p = r.choice(patterns)
            if counts[p] and r.random() < 0.5:
                counts[p] -= 1
                backplane.unwatch(p)
            else:
                counts[p] += 1
                backplane.watch(p)
            if r.random() < 0.3:
                await asyncio.sleep(0)
            if r.random() < 0.05:
                await asyncio.sleep(0.002)

    await asyncio.gather(*(churn(rnd.randrange(1 << 30)) for _ in range(8)))
    wanted = {keys.interest_channel(p) for p, n in counts.items() if n} | {keys.CONTROL_CHANNEL}
    await until(lambda: channels(shared_redis) == wanted, "Redis matches the wanted channels")
    assert backplane.ready()


async def test_concurrent_first_watchers_each_get_one_copy(
    backplane: RedisBackplane, shared_redis: RedisServer
) -> None:
    got: list[Message] = []
    other = RedisBackplane(shared_redis.url)
    await other.start(got.extend)
    try:
        for _ in range(10):
            other.watch("c.t")
        other.watch("c.*")
        other.watch("*.t")
        ch = keys.topic_channel("c.t")
        await until(lambda: ch in channels(shared_redis), "subscribed")
        await until(lambda: {"c", ""} <= backplane._registry.prefixes, "prefixes known")
        msgs = [PublishItem(Message.build("c.t", f"m{i}", 1, i, None)) for i in range(5)]
        await backplane.publish(msgs)
        await until(lambda: len(got) >= 5, "delivery")
        await asyncio.sleep(0.1)
        # Three channels carry each message to this pod; the hub sees it once.
        assert [m.id for m in got] == [f"m{i}" for i in range(5)]
        assert other.stats()["duplicates_dropped"] == 10
    finally:
        await other.close()


async def test_subscriptions_restored_after_restart(redis_server: RedisServer) -> None:
    bp = RedisBackplane(redis_server.url)
    await bp.start(lambda msgs: None)
    try:
        for p in ("r.a", "r.b", "r.*"):
            bp.watch(p)
        await until(lambda: len(channels(redis_server)) == 4, "subscribed")
        redis_server.kill()
        await until(lambda: not bp.ready(), "unready", timeout=2)
        with pytest.raises(BackplaneUnavailable):
            await bp.publish([PublishItem(Message.build("r.a", "x", 1, 1, None))])
        with pytest.raises(BackplaneUnavailable):
            await bp.history("r.a", HistoryRule(pattern="r.a", size=1), None, 0)
        bp.unwatch("r.b")  # interest changes while Redis is away
        bp.watch("r.c")
        back = RedisServer(port=redis_server.port, dir=redis_server.dir).start()
        try:
            want = {keys.topic_channel("r.a"), keys.topic_channel("r.c"), keys.prefix_channel("r")}
            await until(lambda: channels(back) == want | {keys.CONTROL_CHANNEL}, "restored")
            await until(bp.ready, "ready again")
            assert bp.stats()["reconnects"] == 1
            assert bp.stats()["resubscribes"] >= 3
            await until(
                lambda: back.cli("ZRANGE", keys.PREFIXES_KEY, "0", "-1").split() == [f"{bp.pod}:r"],
                "prefix re-announced",
            )
        finally:
            back.stop()
    finally:
        await bp.close()


async def test_live_means_no_message_is_missed(
    backplane: RedisBackplane, shared_redis: RedisServer
) -> None:
    """After `live(pattern)` a publish from another pod reaches the new subscriber."""
    got: list[Message] = []
    other = RedisBackplane(shared_redis.url)
    await other.start(got.extend)
    try:
        for n in range(20):  # fresh topics: each one a first subscriber
            other.watch(f"live.{n}")
            assert await other.live(f"live.{n}")
            await backplane.publish([PublishItem(Message.build(f"live.{n}", "m", 1, n, None))])
        other.watch("wild.*")
        assert await other.live("wild.*")
        await until(lambda: "wild" in backplane._registry.prefixes, "the notice arrived")
        await backplane.publish([PublishItem(Message.build("wild.x", "w", 1, 0, None))])
        await until(lambda: len(got) == 21, "every message")
        assert [m.topic for m in got] == [f"live.{n}" for n in range(20)] + ["wild.x"]
        assert not await other.live("never.watched", wait_s=0.01)
    finally:
        await other.close()


async def test_background_loops_end_when_a_wakeup_races_the_cancel(
    backplane: RedisBackplane,
) -> None:
    """close() cancels the background loops; none may swallow that cancellation.

    Python 3.11's `asyncio.wait_for` returns normally when the awaited future completes
    in the same turn as the cancellation, so a loop parked in it ran on, and close()
    (which awaits every loop) hung: seen as a flaky test teardown after interest churn.
    """
    (registry,) = [t for t in backplane._tasks if t.get_name() == "herald-redis-registry"]
    await asyncio.sleep(0.05)  # parked, waiting for a wake-up or the next heartbeat
    backplane._wake_registry.set()
    registry.cancel()
    await asyncio.wait({registry}, timeout=2.0)
    assert registry.cancelled()


async def test_no_publish_is_lost_while_subscriptions_are_restored(
    shared_redis: RedisServer,
) -> None:
    """Issue 9: after its pub/sub connection dropped, a pod answered 202 as soon as its
    health ping passed, before its listener had resubscribed, and those messages
    reached none of its subscribers. Now it refuses publishes until every subscription
    is back, and replays history topics that other pods published to meanwhile."""
    shared_redis.cli("FLUSHALL")
    rule = HistoryRule(pattern="h.>", size=100)
    got: list[Message] = []
    gaps: list[tuple[str, int]] = []
    bp = RedisBackplane(shared_redis.url)
    bp.attach(lambda t: rule if t.startswith("h.") else None, lambda t, n: gaps.append((t, n)))
    await bp.start(got.extend)
    other = RedisBackplane(shared_redis.url)
    await other.start(lambda msgs: None)

    def item(topic: str, n: int) -> PublishItem:
        msg = Message.build(topic, f"m{n}", int(time.time() * 1000), n, None)
        return PublishItem(msg, rule if topic.startswith("h.") else None)

    try:
        for pattern in ("h.a", "p.a"):
            bp.watch(pattern)
            assert await bp.live(pattern)
        await bp.history("h.a", rule, None, 0)  # as a subscribe to a history topic does
        await other.publish([item("h.a", 1)])
        await until(lambda: len(got) == 1, "live delivery")

        # Drop every pub/sub connection; hold this pod's resubscribe back meanwhile.
        gate = asyncio.Event()
        reconnect = bp._listener._wire

        async def slow_reconnect(addr: tuple[str, int]) -> object:
            await gate.wait()
            return await reconnect(addr)

        bp._listener._wire = slow_reconnect  # type: ignore[method-assign, assignment]
        shared_redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
        await until(lambda: not bp.ready(), "this pod lost its subscriptions")
        await until(lambda: other.stats()["reconnects"] == 1, "the other pod reconnected")
        await until(other.ready, "the other pod is back")
        await until(lambda: bp._cmd_ok, "Redis answers this pod's commands again")
        assert not bp.ready()
        with pytest.raises(BackplaneUnavailable):
            await bp.publish([item("p.a", 0)])
        await other.publish([item("h.a", 2), item("h.a", 3)])  # missed live by this pod

        gate.set()
        await until(bp.ready, "subscriptions restored")
        await until(lambda: len(got) == 3, "replayed from history")
        assert [(m.topic, m.offset) for m in got] == [("h.a", 1), ("h.a", 2), ("h.a", 3)]
        assert gaps == []  # history held everything: no gap to report
        await bp.publish([item("p.a", 4)])
        await until(lambda: len(got) == 4, "live again")
    finally:
        await other.close()
        await bp.close()

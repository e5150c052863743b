"""The sans-I/O hub: grouping, batching, conflation, slow consumers, resume.

No sockets and no clock: fake transports record writes and `now` is passed in.
"""

from __future__ import annotations

import orjson
import pytest

from fanout.framing import text_frame
from fanout.hub import MAX_CATCH_UP, Hub, Shape
from fanout.message import Message
from shared.filters import compile_filter


class FakeTransport:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeSink:
    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.slow = False

    def on_slow(self) -> None:
        self.slow = True

    def payloads(self) -> list[dict]:
        out = []
        for f in self.transport.frames:
            # Strip the 2- or 4-byte header of an unmasked server frame.
            n = f[1] & 0x7F
            start = 2 if n < 126 else 4 if n == 126 else 10
            out.append(orjson.loads(f[start:]))
        return out

    def ids(self) -> list[str]:
        return [m["id"] for p in self.payloads() if p["op"] == "msgs" for m in p["msgs"]]


def msg(topic: str, i: int | str, offset: int | None = None, **attrs: object) -> Message:
    m = Message.build(topic, str(i), 0, {"i": i}, dict(attrs))
    return m.with_offset(offset) if offset is not None else m


def shape(
    pattern: str, flt: object = None, batch_ms: int = 0, mode: str = "all", key: str | None = None
) -> Shape:
    return Shape(pattern, compile_filter(flt), batch_ms, mode, key)  # type: ignore[arg-type]


def test_same_shape_shares_group_and_identical_frames() -> None:
    hub = Hub()
    a, b = FakeSink(), FakeSink()
    ga = hub.subscribe(a, shape("game.*.score", {"gameId": "1"}))
    gb = hub.subscribe(b, shape("game.*.score", {"gameId": "1"}))
    assert ga is gb and hub.group_count == 1
    hub.dispatch(msg("game.1.score", 1, gameId="1"), 0.0)
    hub.flush_immediate()
    assert a.transport.frames == b.transport.frames
    assert a.transport.frames[0] is b.transport.frames[0]  # framed once, same object
    assert a.payloads()[0]["sub"] == ga.key


def test_sub_key_is_deterministic_and_shape_sensitive() -> None:
    assert shape("a.b").sub_key == shape("a.b").sub_key
    assert shape("a.b", {"x": ["1", "2"]}).sub_key == shape("a.b", {"x": ["2", "1"]}).sub_key
    keys = {
        shape("a.b").sub_key,
        shape("a.*").sub_key,
        shape("a.b", {"x": "1"}).sub_key,
        shape("a.b", batch_ms=10).sub_key,
        shape("a.b", mode="latest").sub_key,
        shape("a.b", mode="latest", key="k").sub_key,
    }
    assert len(keys) == 6


def test_filter_and_wildcards_deliver_exactly_matching_in_order() -> None:
    hub = Hub()
    s = FakeSink()
    hub.subscribe(s, shape("game.>", {"gameId": ["1", "2"]}))
    for i, (topic, gid) in enumerate(
        [
            ("game.1.score", "1"),
            ("game.3.score", "3"),
            ("other.1", "1"),
            ("game.2", "2"),
            ("game", "1"),
            ("game.1.a.b", "1"),
        ]
    ):
        hub.dispatch(msg(topic, i, gameId=gid), 0.0)
    hub.flush_immediate()
    assert s.ids() == ["0", "3", "5"]


def test_same_turn_messages_share_one_frame() -> None:
    hub = Hub()
    s = FakeSink()
    hub.subscribe(s, shape("t"))
    for i in range(3):
        hub.dispatch(msg("t", i), 0.0)
    assert hub.flush_immediate() == 1
    assert len(s.transport.frames) == 1 and s.ids() == ["0", "1", "2"]


def test_batch_ms_coalesces_until_due() -> None:
    woken: list[int] = []
    hub = Hub(on_wakeup=lambda: woken.append(1))
    s = FakeSink()
    hub.subscribe(s, shape("t", batch_ms=100))
    hub.dispatch(msg("t", 1), 10.0)
    assert hub.next_deadline() == pytest.approx(10.1)
    hub.dispatch(msg("t", 2), 10.05)
    assert hub.flush_due(10.099) == 0 and not s.transport.frames
    assert hub.flush_due(10.1) == 1
    assert len(s.transport.frames) == 1 and s.ids() == ["1", "2"]
    assert woken == [1]  # woken once: when the first message made a batch due
    # The next interval starts with the next message, so flushes are >= batch_ms apart.
    hub.dispatch(msg("t", 3), 10.15)
    assert hub.next_deadline() == pytest.approx(10.25)


def test_latest_mode_keeps_newest_per_key() -> None:
    hub = Hub()
    s = FakeSink()
    hub.subscribe(s, shape("game.*", batch_ms=50, mode="latest", key="gameId"))
    hub.dispatch(msg("game.a", "a1", gameId="1"), 0.0)
    hub.dispatch(msg("game.a", "b1", gameId="2"), 0.0)
    hub.dispatch(msg("game.a", "a2", gameId="1"), 0.01)
    hub.flush_due(1.0)
    assert s.ids() == ["b1", "a2"]  # ordered by each key's newest arrival


def test_latest_mode_without_key_is_per_topic() -> None:
    hub = Hub()
    s = FakeSink()
    hub.subscribe(s, shape("game.*", batch_ms=50, mode="latest"))
    for i, topic in enumerate(["game.a", "game.b", "game.a"]):
        hub.dispatch(msg(topic, i), 0.0)
    hub.flush_due(1.0)
    assert s.ids() == ["1", "2"]


def test_slow_socket_is_skipped_and_told_lagged_others_unaffected() -> None:
    hub = Hub(send_buffer_bytes=1000)
    fast, slow = FakeSink(), FakeSink()
    hub.subscribe(fast, shape("t"))
    group = hub.subscribe(slow, shape("t"))
    slow.transport.buffered = 990
    hub.dispatch(msg("t", 1), 0.0)
    hub.dispatch(msg("t", 2), 0.0)
    hub.flush_immediate()
    assert fast.ids() == ["1", "2"] and slow.transport.frames == []
    assert hub.stats.messages_dropped == 2
    slow.transport.buffered = 0
    hub.dispatch(msg("t", 3), 0.0)
    hub.flush_immediate()
    first, second = slow.payloads()
    assert first == {"op": "lagged", "sub": group.key, "dropped": 2}
    assert [m["id"] for m in second["msgs"]] == ["3"]


def test_lagged_notice_sent_when_topic_goes_quiet() -> None:
    hub = Hub(send_buffer_bytes=1000)
    s = FakeSink()
    hub.subscribe(s, shape("t"))
    s.transport.buffered = 999
    hub.dispatch(msg("t", 1), 0.0)
    hub.flush_immediate()
    s.transport.buffered = 0
    hub.send_lagged_notices()
    assert s.payloads()[0]["op"] == "lagged"


def test_disconnect_policy_removes_slow_socket() -> None:
    hub = Hub(send_buffer_bytes=1000, slow_policy="disconnect")
    fast, slow = FakeSink(), FakeSink()
    hub.subscribe(fast, shape("t"))
    hub.subscribe(slow, shape("t"))
    slow.transport.buffered = 999
    hub.dispatch(msg("t", 1), 0.0)
    hub.flush_immediate()
    assert slow.slow and fast.ids() == ["1"]
    assert hub.subscription_count == 1 and hub.stats.slow_disconnects == 1


def test_empty_buffer_always_accepts_a_frame_bigger_than_the_limit() -> None:
    hub = Hub(send_buffer_bytes=1024, max_frame_bytes=1 << 20)
    s = FakeSink()
    hub.subscribe(s, shape("t"))
    hub.dispatch(Message.build("t", "big", 0, "x" * 5000, None), 0.0)
    hub.flush_immediate()
    assert s.ids() == ["big"]


def test_big_batches_are_split_under_max_frame_bytes() -> None:
    hub = Hub(max_frame_bytes=300)
    s = FakeSink()
    hub.subscribe(s, shape("t", batch_ms=10))
    for i in range(10):
        hub.dispatch(Message.build("t", str(i), 0, "x" * 50, None), 0.0)
    hub.flush_due(1.0)
    assert len(s.transport.frames) > 1
    assert s.ids() == [str(i) for i in range(10)]


def test_interest_callbacks_first_and_last() -> None:
    calls: list[tuple[str, bool]] = []
    hub = Hub(on_interest=lambda p, added: calls.append((p, added)))
    a, b = FakeSink(), FakeSink()
    g1 = hub.subscribe(a, shape("x.>"))
    hub.subscribe(b, shape("x.>", {"k": "v"}))
    assert calls == [("x.>", True)]
    hub.unsubscribe(a, g1.key)
    assert calls == [("x.>", True)]
    hub.remove_sink(b)
    assert calls == [("x.>", True), ("x.>", False)]
    assert hub.group_count == 0 and hub.patterns() == []


def test_unsubscribe_stops_delivery_and_unknown_key_is_false() -> None:
    hub = Hub()
    s = FakeSink()
    g = hub.subscribe(s, shape("t"))
    assert hub.unsubscribe(s, g.key)
    assert not hub.unsubscribe(s, g.key)
    hub.dispatch(msg("t", 1), 0.0)
    hub.flush_immediate()
    assert s.transport.frames == []


def test_removed_group_pending_batch_is_not_flushed() -> None:
    hub = Hub()
    s = FakeSink()
    g = hub.subscribe(s, shape("t", batch_ms=10))
    hub.dispatch(msg("t", 1), 0.0)
    hub.unsubscribe(s, g.key)
    assert hub.next_deadline() is None
    assert hub.flush_due(5.0) == 0


def test_catch_up_joins_replay_and_live_without_gap_or_duplicate() -> None:
    hub = Hub()
    live, resuming = FakeSink(), FakeSink()
    hub.subscribe(live, shape("t"))
    g = hub.subscribe(resuming, shape("t"), catch_up=True)
    # Live traffic while the history read is in flight: offsets 5 and 6.
    hub.dispatch(msg("t", 5, offset=5), 0.0)
    hub.dispatch(msg("t", 6, offset=6), 0.0)
    hub.flush_immediate()
    assert resuming.transport.frames == []  # nothing live before the replay
    replay = [msg("t", i, offset=i) for i in (3, 4, 5)]  # history read saw up to 5
    owed = hub.finish_catch_up(resuming, g.key, replay, since=2)
    assert [m.offset for m in owed] == [3, 4, 5, 6]
    hub.dispatch(msg("t", 7, offset=7), 0.0)
    hub.flush_immediate()
    assert resuming.ids() == ["7"]


def test_catch_up_buffer_is_bounded_and_the_excess_is_reported_lagged() -> None:
    hub = Hub()
    s = FakeSink()
    g = hub.subscribe(s, shape("t"), catch_up=True)
    for i in range(MAX_CATCH_UP + 7):
        hub.dispatch(msg("t", i, offset=i + 1), 0.0)
        hub.flush_immediate()
    owed = hub.finish_catch_up(s, g.key, [], since=0)
    assert len(owed) == MAX_CATCH_UP
    hub.send_lagged_notices()
    assert s.payloads() == [{"op": "lagged", "sub": g.key, "dropped": 7}]


def test_catch_up_with_empty_replay_drops_messages_at_or_before_since() -> None:
    hub = Hub()
    s = FakeSink()
    g = hub.subscribe(s, shape("t"), catch_up=True)
    hub.dispatch(msg("t", 4, offset=4), 0.0)  # delayed delivery of an old one
    hub.dispatch(msg("t", 6, offset=6), 0.0)
    hub.flush_immediate()
    owed = hub.finish_catch_up(s, g.key, [], since=5)
    assert [m.offset for m in owed] == [6]


def test_frame_bytes_are_a_valid_websocket_text_frame() -> None:
    for n in (0, 125, 126, 65535, 65536):
        f = text_frame(b"x" * n)
        assert f[0] == 0x81
        if n < 126:
            assert f[1] == n and len(f) == n + 2
        elif n < 65536:
            assert f[1] == 126 and int.from_bytes(f[2:4], "big") == n
        else:
            assert f[1] == 127 and int.from_bytes(f[2:10], "big") == n


def test_publish_flush_latency_is_observed_once_per_flushed_batch() -> None:
    wall = [100.0]
    hub = Hub(wall_clock=lambda: wall[0])
    s = FakeSink()
    hub.subscribe(s, shape("t", batch_ms=100))
    hub.dispatch(Message.build("t", "1", 99_970, 1, None), 0.0)  # published 30 ms ago
    hub.dispatch(Message.build("t", "2", 99_990, 2, None), 0.01)
    wall[0] = 100.1
    assert hub.flush_due(0.1) == 1
    hist = hub.stats.publish_flush
    assert hist.count == 1  # one batch, timed by its oldest message
    assert hist.sum == pytest.approx(0.13)
    buckets = hist.snapshot()["buckets"]
    assert buckets["0.1"] == 0 and buckets["0.25"] == 1 and buckets["+Inf"] == 1
    # A clock ahead of ours (another pod's ts) counts as 0, not a negative sum.
    hub.dispatch(Message.build("t", "3", 200_000, 3, None), 1.0)
    hub.flush_due(2.0)
    assert hist.count == 2 and hist.snapshot()["buckets"]["0.0005"] == 1
    assert hist.sum == pytest.approx(0.13)

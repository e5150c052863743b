"""The connection class in-process, the way websockets tests its protocol: bytes in
through `data_received`, frames out of a fake transport. No sockets, no server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from fanout.hub import Shape
from fanout.memory import MemoryBackplane
from fanout.node import Node
from gateway.app import make_queues
from gateway.commands import HANDLERS
from gateway.edge import Edge
from gateway.wsproto import MAX_PENDING, MAX_QUEUED, ConnState, HeraldWebSocket
from procs import MS
from shared.config import HistoryRule, Settings
from shared.filters import MATCH_ALL
from wsclient import masked_frame, parse_frames

SECRET = "inproc-secret-of-at-least-32-bytes-long"
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class FakeTransport:
    """The asyncio.Transport calls a connection makes, recorded."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.reading = True
        self.closed = False
        self.limits: tuple[int | None, int | None] = (None, None)
        # With `hold`, written bytes stay buffered (a peer that does not read) and
        # pause_writing fires past the high-water mark, as asyncio does.
        self.hold = False
        self.buffered = 0
        self.protocol: HeraldWebSocket | None = None

    def write(self, data: bytes) -> None:
        self.out += data
        if self.hold:
            before = self.buffered
            self.buffered += len(data)
            high = self.limits[0] or 0
            if before <= high < self.buffered and self.protocol is not None:
                self.protocol.pause_writing()

    def drain(self) -> None:
        """The peer read everything: empty the buffer and say so."""
        was_paused = self.buffered > (self.limits[0] or 0)
        self.buffered = 0
        if was_paused and self.protocol is not None:
            self.protocol.resume_writing()

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Peer:
    """One in-process connection: send commands as bytes, read the frames it wrote."""

    def __init__(self, edge: Edge, query: str = "") -> None:
        self.transport = FakeTransport()
        self.conn = HeraldWebSocket(None, SimpleNamespace(connections=set()), {"edge": edge})
        self.transport.protocol = self.conn
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]
        self.conn.data_received(UPGRADE.replace(b"/ws", b"/ws" + query.encode(), 1))
        head, _, rest = bytes(self.transport.out).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.transport.out = bytearray(rest)

    def send(self, *cmds: dict[str, Any]) -> None:
        """All commands in one read, as a pipelining client's bytes arrive."""
        self.conn.data_received(b"".join(masked_frame(0x1, json.dumps(c).encode()) for c in cmds))

    def frames(self) -> list[tuple[int, bytes]]:
        frames, rest = parse_frames(bytes(self.transport.out))
        assert not rest
        self.transport.out = bytearray()
        return frames

    def replies(self) -> list[dict[str, Any]]:
        return [json.loads(p) for op, p in self.frames() if op == 0x1]

    async def settle(self) -> None:
        """Let every spawned command finish (queue commands touch a real store)."""
        deadline = time.monotonic() + 5000 * MS
        while time.monotonic() < deadline:
            if not self.conn._tasks and not getattr(self.conn, "_queue", None):
                return
            await asyncio.sleep(0 if not self.conn._tasks else MS)
        raise AssertionError("commands did not finish")


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    return next((int.from_bytes(p[:2], "big") for op, p in frames if op == 0x8), None)


@pytest.fixture
async def make_edge() -> AsyncIterator[Callable[..., Any]]:
    edges: list[Edge] = []

    async def make(queues: bool = False, **settings: Any) -> Edge:
        settings.setdefault("history", [HistoryRule(pattern="hist.>", size=1000)])
        config = Settings(**settings)
        node = Node(config, MemoryBackplane(), queues=make_queues(config) if queues else None)
        await node.start()
        edges.append(Edge(node, HANDLERS))
        return edges[-1]

    yield make
    for edge in edges:
        await edge.stop()
        await edge.node.stop()


async def publish(edge: Edge, topic: str, n: int, data: str = "x") -> None:
    await edge.node.publish([{"topic": topic, "data": data} for _ in range(n)], _anyone(edge))


def _anyone(edge: Edge) -> Any:
    return edge.node.auth.authenticate(None)


# ---- basics ------------------------------------------------------------------------


async def test_states_are_an_enum_and_a_command_round_trips(make_edge: Any) -> None:
    peer = Peer(await make_edge())
    assert peer.conn._state is ConnState.OPEN
    peer.send({"op": "ping", "id": 7})
    assert peer.replies() == [{"op": "pong", "id": 7}]
    assert peer.transport.limits[0] == peer.conn.node.settings.send_buffer_bytes


# ---- ordering (issue 9) ------------------------------------------------------------


async def test_subscribe_then_unsubscribe_leaves_no_subscription(make_edge: Any) -> None:
    """A history subscribe completes asynchronously; the unsubscribe right behind it
    must still find it (old code answered 'no such subscription' and kept it)."""
    edge = await make_edge()
    peer = Peer(edge)
    key = Shape("hist.e", MATCH_ALL).sub_key  # deterministic, so a client can pipeline
    peer.send(
        {"op": "subscribe", "id": 1, "topic": "hist.e"},
        {"op": "unsubscribe", "id": 2, "sub": key},
        {"op": "ping", "id": 3},
    )
    await peer.settle()
    assert [r["op"] for r in peer.replies()] == ["subscribed", "unsubscribed", "pong"]
    assert not edge.node.hub.subscriptions_of(peer.conn)


async def test_pipelined_subscribes_do_not_overshoot_the_limit(make_edge: Any) -> None:
    """Old code: every pipelined subscribe passed the check before any completed."""
    edge = await make_edge(max_subscriptions_per_connection=5)
    peer = Peer(edge)
    peer.send(*({"op": "subscribe", "id": i, "topic": f"hist.t{i}"} for i in range(12)))
    await peer.settle()
    ops = [r["op"] for r in peer.replies()]
    assert ops.count("subscribed") == 5 and ops.count("error") == 7
    assert len(edge.node.hub.subscriptions_of(peer.conn)) == 5


# ---- flow control (issue 9) --------------------------------------------------------


async def test_a_full_write_buffer_stops_reading_and_holds_commands(make_edge: Any) -> None:
    peer = Peer(await make_edge())
    peer.conn.pause_writing()  # asyncio says: over send_buffer_bytes
    assert not peer.transport.reading
    peer.send({"op": "ping", "id": 1}, {"op": "ping", "id": 2})
    assert peer.replies() == []  # nothing more is queued for a socket that is full
    peer.conn.resume_writing()
    assert [r["id"] for r in peer.replies()] == [1, 2]
    assert peer.transport.reading


async def test_a_long_command_queue_stops_reading(make_edge: Any) -> None:
    peer = Peer(await make_edge())
    peer.conn.pause_writing()
    peer.send(*({"op": "ping", "id": i} for i in range(MAX_PENDING + 5)))
    peer.conn._write_paused = False  # drained, but the queue alone still holds reading
    peer.conn._update_reading()
    assert not peer.transport.reading
    peer.conn.resume_writing()
    assert len(peer.replies()) == MAX_PENDING + 5 and peer.transport.reading


async def test_one_read_may_queue_many_commands_but_not_without_bound(make_edge: Any) -> None:
    peer = Peer(await make_edge())
    peer.conn.pause_writing()
    peer.send(*({"op": "ping", "id": i} for i in range(5000)))  # one read, pipelined
    assert close_code(peer.frames()) is None
    peer.conn.resume_writing()
    assert len(peer.replies()) == 5000
    peer.conn.pause_writing()
    peer.send(*({"op": "ping"} for _ in range(MAX_QUEUED + 1)))
    assert close_code(peer.frames()) == 1008


# ---- one builder of msgs frames (issue 10) -----------------------------------------


async def test_resume_frames_are_chunked_under_max_frame_bytes(make_edge: Any) -> None:
    """Old code sent the whole replay as one frame, over max_frame_bytes."""
    edge = await make_edge(max_frame_bytes=1024)
    await publish(edge, "hist.big", 30, "y" * 100)
    peer = Peer(edge)
    peer.send({"op": "subscribe", "id": 1, "topic": "hist.big", "since": 0})
    await peer.settle()
    frames = [p for op, p in peer.frames() if op == 0x1]
    msgs = [json.loads(p) for p in frames[1:]]
    assert all(m["op"] == "msgs" for m in msgs) and len(msgs) > 1
    assert all(len(p) <= 1024 for p in frames)
    assert [m["offset"] for f in msgs for m in f["msgs"]] == list(range(1, 31))


async def test_a_long_replay_goes_out_a_page_at_a_time_as_the_socket_drains(
    make_edge: Any,
) -> None:
    """Old code wrote the whole replay into the write buffer at once."""
    edge = await make_edge(send_buffer_bytes=4096)
    await publish(edge, "hist.big", 200, "z" * 200)
    peer = Peer(edge)
    peer.transport.hold = True  # the client reads nothing for now
    peer.send({"op": "subscribe", "id": 1, "topic": "hist.big", "since": 0})
    for _ in range(50):
        await asyncio.sleep(0)
    assert 0 < len(peer.transport.out) < 16 * 1024  # one page, not ~60 KB of replay
    await publish(edge, "hist.big", 5, "live")  # arrives while the replay is under way
    for _ in range(100):  # the client reads, a page goes out, and so on
        peer.transport.drain()
        await asyncio.sleep(0)
    await peer.settle()
    replies = peer.replies()
    assert replies[0]["op"] == "subscribed" and replies[0]["recovered"] is True
    offsets = [m["offset"] for r in replies[1:] for m in r["msgs"]]
    assert offsets == list(range(1, 206))  # in order, no gap, no duplicate


# ---- filter cost (issue 9) ---------------------------------------------------------

COSTLY = {"$or": [{"k": [str(i) for i in range(75)]}, {"j": [str(i) for i in range(75)]}]}


async def test_filter_cost_is_bounded_per_connection_and_per_process(make_edge: Any) -> None:
    edge = await make_edge(max_filter_cost_per_connection=300, max_filter_cost=450)
    a, b = Peer(edge), Peer(edge)
    a.send(*({"op": "subscribe", "id": i, "topic": f"t.{i}", "filter": COSTLY} for i in range(3)))
    replies = a.replies()
    assert [r["op"] for r in replies] == ["subscribed", "subscribed", "error"]
    assert replies[2]["code"] == "filter_cost_exceeded"
    b.send({"op": "subscribe", "id": 1, "topic": "t.x", "filter": COSTLY})
    assert b.replies()[0]["op"] == "subscribed"
    b.send({"op": "subscribe", "id": 2, "topic": "t.y", "filter": COSTLY})
    assert b.replies()[0]["code"] == "filter_cost_exceeded"  # the process is full
    b.send({"op": "subscribe", "id": 3, "topic": "t.0", "filter": COSTLY})
    assert b.replies()[0]["op"] == "subscribed"  # a shared group costs nothing more
    a.send({"op": "unsubscribe", "sub": replies[1]["sub"]})
    a.replies()
    a.send({"op": "subscribe", "id": 4, "topic": "t.y", "filter": COSTLY})
    assert a.replies()[0]["op"] == "subscribed"  # freed by the unsubscribe
    assert edge.node.hub.filter_cost == 450


# ---- command rate limit (issue 9) --------------------------------------------------


async def test_command_rate_limit_errors_then_closes_1008(make_edge: Any) -> None:
    edge = await make_edge(ws_command_rate=0.001, ws_command_burst=3)
    peer = Peer(edge)
    peer.send(*({"op": "ping", "id": i} for i in range(5)))
    replies = peer.replies()
    assert [r["op"] for r in replies] == ["pong"] * 3 + ["error"] * 2
    assert replies[3]["code"] == "rate_limited" and replies[3]["details"]["retry_after_ms"] > 0
    peer.send(*({"op": "ping", "id": i} for i in range(20)))
    assert close_code(peer.frames()) == 1008


async def test_command_rate_limit_is_off_in_dev_mode_and_on_with_auth(make_edge: Any) -> None:
    assert (await make_edge()).command_bucket() is None
    assert (await make_edge(api_keys=["k"])).command_bucket() is not None


# ---- token expiry (issue 9) --------------------------------------------------------


def token(ttl: float, sub: str = "u1", **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl), **claims}, SECRET, "HS256")


async def wait_closed(peer: Peer, seconds: float) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frames += peer.frames()
        if close_code(frames) is not None:
            break
        await asyncio.sleep(20 * MS)
    return frames


async def test_token_expiring_then_close_4401_at_exp(make_edge: Any) -> None:
    edge = await make_edge(jwt_secret=SECRET, token_refresh_window=30)
    peer = Peer(edge, f"?token={token(1.5)}")
    for _ in range(100):  # the warning is due at once: exp is under the window away
        if peer.transport.out:
            break
        await asyncio.sleep(0)
    (warning,) = peer.replies()
    assert warning["op"] == "token_expiring" and 0 <= warning["in_ms"] <= 1500
    frames = await wait_closed(peer, 3000 * MS)
    assert close_code(frames) == 4401
    assert b"token expired" in next(p for op, p in frames if op == 0x8)


async def test_refreshed_token_keeps_the_connection(make_edge: Any) -> None:
    edge = await make_edge(jwt_secret=SECRET, token_refresh_window=30)
    peer = Peer(edge, f"?token={token(1.5)}")
    fresh = token(600)
    peer.send({"op": "auth", "id": 1, "token": fresh})
    replies = [r for r in peer.replies() if r["op"] != "token_expiring"]
    assert replies == [
        {
            "op": "authenticated",
            "id": 1,
            "client": "u1",
            "exp": jwt.decode(fresh, SECRET, ["HS256"])["exp"],
        }
    ]
    frames = await wait_closed(peer, 2000 * MS)  # past the first token's exp
    assert close_code(frames) is None and peer.conn.is_open


async def test_refresh_for_another_subject_is_forbidden_and_kept(make_edge: Any) -> None:
    edge = await make_edge(jwt_secret=SECRET)
    peer = Peer(edge, f"?token={token(600)}")
    peer.send({"op": "auth", "id": 1, "token": token(600, sub="u2")})
    (reply,) = peer.replies()
    assert reply["op"] == "error" and reply["code"] == "forbidden"
    assert peer.conn.is_open and peer.conn.principal is not None
    assert peer.conn.principal.sub == "u1"


async def test_refresh_ends_subscriptions_the_new_claims_disallow(make_edge: Any) -> None:
    edge = await make_edge(jwt_secret=SECRET)
    peer = Peer(edge, f"?token={token(600, subscribe=['>'])}")
    peer.send(
        {"op": "subscribe", "id": 1, "topic": "a.x"}, {"op": "subscribe", "id": 2, "topic": "b.x"}
    )
    replies = peer.replies()
    keys = {r["topic"]: r["sub"] for r in replies}
    peer.send({"op": "auth", "id": 3, "token": token(600, subscribe=["a.>"])})
    replies = peer.replies()
    ended = [r for r in replies if r["op"] == "error"]
    assert len(ended) == 1 and ended[0]["sub"] == keys["b.x"]
    assert ended[0]["code"] == "forbidden"
    assert list(edge.node.hub.subscriptions_of(peer.conn)) == [keys["a.x"]]


async def test_refresh_without_admin_ends_queue_consumers(make_edge: Any, tmp_path: Any) -> None:
    edge = await make_edge(queues=True, jwt_secret=SECRET, data_dir=tmp_path)
    assert edge.node.queues is not None
    await edge.node.queues.create_or_update("jobs", {})
    peer = Peer(edge, f"?token={token(600, admin=True)}")
    peer.send({"op": "consume", "id": 1, "queue": "jobs"})
    await peer.settle()
    assert [r["op"] for r in peer.replies()] == ["consuming"]
    peer.send({"op": "auth", "id": 2, "token": token(600)})
    ended, reply = peer.replies()
    assert ended["op"] == "error" and ended["code"] == "forbidden" and ended["queue"] == "jobs"
    assert reply["op"] == "authenticated"
    assert not peer.conn.consumers()

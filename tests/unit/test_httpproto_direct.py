"""HeraldHttp serves the fast routes' plain case itself, without an ASGI cycle.

Two in-process servers share an app shape and a fixed `date` header: one of HeraldHttp
protocols, one of uvicorn's own HttpToolsProtocol (the ASGI path: PublishFastPath in
front of FastAPI, as before). Every request goes to both, over real sockets, and the
replies must be the same bytes. Other tests check what only the direct path does: no
ASGI task for a plain publish, a Task only when the publish suspends (Redis),
pipelining, flow control, shutdown, failures and clients that leave early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import uvicorn
from test_fastpath import CASES, MSG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from fanout.node import Node
from gateway.app import body_limit, create_app, make_backplane
from gateway.fastpath import PublishFastPath
from gateway.httpproto import HeraldHttp, _rest
from gateway.server import build_config
from procs import RedisServer
from shared.config import Settings

KEY = "k-fast"
DATE = (b"date", b"Thu, 03 Dec 2026 12:00:00 GMT")


@dataclass
class Stack:
    """One server: its port, node, protocols made, and the ASGI tasks and Tasks started."""

    port: int
    node: Node
    fast: PublishFastPath
    state: ServerState
    made: list[HttpToolsProtocol] = field(default_factory=list)
    asgi: list[str] = field(default_factory=list)  # a path per ASGI cycle started
    tasks: list[str] = field(default_factory=list)  # a path per direct request's Task

    async def exchange(self, request: bytes, replies: int = 1) -> list[bytes]:
        """Send `request` (maybe several, pipelined) on one connection; read `replies`."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(request)
            return [await read_reply(reader) for _ in range(replies)]
        finally:
            writer.close()


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def settings(**extra: Any) -> Settings:
    return Settings(
        api_keys=[KEY],
        data_dir="/nonexistent",
        http_publish_rate=1,
        http_publish_burst=600,
        **extra,
    )


@contextlib.asynccontextmanager
async def serve(
    protocol: type[HttpToolsProtocol],
    conf: Settings,
    monkeypatch: pytest.MonkeyPatch,
    keep_alive: float = 5.0,
) -> AsyncIterator[Stack]:
    app = create_app(conf)
    node = Node(conf, make_backplane(conf))
    await node.start()
    app.state.node = node
    fast = PublishFastPath(app, body_limit(conf))
    # As gateway.server configures uvicorn: proxy headers and `server` header on.
    config = uvicorn.Config(
        fast, lifespan="off", log_level="warning", access_log=False, timeout_keep_alive=keep_alive
    )
    config.load()
    state = ServerState()
    state.default_headers = [DATE, *config.encoded_headers]
    app_state = {"edge": SimpleNamespace(node=node)}
    server: asyncio.Server | None = None
    stack = Stack(0, node, fast, state)

    def factory() -> HttpToolsProtocol:
        proto = protocol(config=config, server_state=state, app_state=app_state)
        start_asgi = proto._start_asgi_task

        def recorded(cycle: Any, app: Any) -> None:
            stack.asgi.append(cycle.scope["path"])
            start_asgi(cycle, app)

        proto._start_asgi_task = recorded  # type: ignore[method-assign]
        if isinstance(proto, HeraldHttp):
            track = proto._track

            def tracked(task: asyncio.Task[None], *args: Any) -> None:
                stack.tasks.append("task")
                track(task, *args)

            proto._track = tracked  # type: ignore[method-assign]
        stack.made.append(proto)
        return proto

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    stack.port = server.sockets[0].getsockname()[1]
    try:
        yield stack
    finally:
        server.close()
        await server.wait_closed()
        for task in list(state.tasks):
            await task
        await node.stop()


@contextlib.asynccontextmanager
async def pair(
    monkeypatch: pytest.MonkeyPatch, conf: Settings | None = None
) -> AsyncIterator[tuple[Stack, Stack]]:
    conf = conf or settings()
    async with (
        serve(HeraldHttp, conf, monkeypatch) as direct,
        serve(HttpToolsProtocol, conf, monkeypatch) as asgi,
    ):
        yield direct, asgi


def post(path: str, headers: dict[str, str], body: bytes, version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nhost: herald\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


AUTH = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
PLAIN = orjson.dumps(MSG)
EXTRA: list[tuple[str, dict[str, str], bytes]] = [
    ("/v1/publish?x=1", AUTH, PLAIN),
    ("/v1/%70ublish", AUTH, PLAIN),
    ("/v1/publish", {**AUTH, "origin": "https://a.example"}, PLAIN),
    ("/v1/publish", {**AUTH, "content-type": "application/json; charset=utf-8"}, PLAIN),
    ("/v1/publish", {**AUTH, "connection": "close"}, PLAIN),
    ("/v1/publish", {**AUTH, "authorization": "Basic eA=="}, PLAIN),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "topic": "$sys.x"})),
    ("/v1/publish/batch", AUTH, orjson.dumps({"entries": [MSG, {**MSG, "topic": ""}]})),
    ("/v1/healthz", AUTH, b"{}"),
    ("/v1/queues/q/receive", AUTH, b"{}"),
]


@pytest.mark.parametrize(("path", "headers", "body"), CASES + EXTRA)
async def test_the_same_bytes_as_the_asgi_path(
    monkeypatch: pytest.MonkeyPatch, path: str, headers: dict[str, str], body: bytes
) -> None:
    async with pair(monkeypatch) as (direct, asgi):
        request = post(path, headers, body)
        (got,) = await direct.exchange(request)
        (want,) = await asgi.exchange(request)
        assert got == want
        assert not got.startswith(b"HTTP/1.1 500")


async def test_http_1_0_and_a_body_over_the_limit_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    async with pair(monkeypatch) as (direct, asgi):
        for request in (
            post("/v1/publish", AUTH, PLAIN, version="1.0"),
            post("/v1/publish", AUTH, b"", version="1.0"),
            # Content-Length over the limit, body never sent: BodyLimit's 413.
            post("/v1/publish", AUTH, b"").replace(
                b"content-length: 0", b"content-length: %d" % (body_limit(settings()) + 1)
            ),
        ):
            assert await direct.exchange(request) == await asgi.exchange(request)


async def test_chunked_and_expect_continue_go_the_asgi_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chunked = (
        b"POST /v1/publish HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n"
        b"content-type: application/json\r\nauthorization: Bearer " + KEY.encode() + b"\r\n\r\n"
        b"%x\r\n" % len(PLAIN) + PLAIN + b"\r\n0\r\n\r\n"
    )
    expect = post("/v1/publish", {**AUTH, "expect": "100-continue"}, PLAIN)
    async with pair(monkeypatch) as (direct, asgi):
        for request in (chunked, expect):
            got = await direct.exchange(request, 2 if request is expect else 1)
            assert got == await asgi.exchange(request, 2 if request is expect else 1)
        assert direct.asgi == ["/v1/publish", "/v1/publish"]


async def test_a_plain_publish_makes_no_asgi_cycle_and_no_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The point of the change: the memory engine's publish completes inline."""
    async with serve(HeraldHttp, settings(), monkeypatch) as direct:
        batch = orjson.dumps({"entries": [MSG]})
        await direct.exchange(post("/v1/publish", AUTH, PLAIN))
        await direct.exchange(post("/v1/publish/batch", AUTH, batch))
        assert (direct.asgi, direct.tasks) == ([], [])
        # Not the plain case: FastAPI answers, in an ASGI cycle.
        await direct.exchange(post("/v1/publish", AUTH, orjson.dumps({**MSG, "x": 1})))
        assert direct.asgi == ["/v1/publish"]
        # Queue routes may wait (`asyncio.timeout`): a Task, never inline.
        await direct.exchange(post("/v1/queues/q/receive", AUTH, b"{}"))
        assert direct.tasks == ["task"]
        assert direct.state.total_requests == 4  # limit_max_requests counts them


async def test_keep_alive_serves_a_sequence_and_observes_latency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serve(HeraldHttp, settings(), monkeypatch) as direct:
        registry = direct.fast.app.state.telemetry.registry
        labels = {"method": "POST", "route": "/v1/publish", "status": "202"}
        metric = "herald_http_request_duration_seconds_count"
        before = registry.get_sample_value(metric, labels) or 0
        reader, writer = await asyncio.open_connection("127.0.0.1", direct.port)
        for i in range(3):
            writer.write(post("/v1/publish", AUTH, orjson.dumps({**MSG, "id": f"k{i}"})))
            reply = await read_reply(reader)
            assert reply.startswith(b"HTTP/1.1 202") and f'"k{i}"'.encode() in reply
        assert registry.get_sample_value(metric, labels) == before + 3
        writer.write(post("/v1/publish", {**AUTH, "connection": "close"}, PLAIN))
        assert b"connection: close\r\n" in await read_reply(reader)
        assert await reader.read() == b""  # closed by the server
        writer.close()
        assert len(direct.made) == 1


@pytest.mark.parametrize("path", ["/v1/publish", "/healthz"])
async def test_keep_alive_arms_one_timer_per_connection(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """uvicorn armed (and cancelled) a timer per request; served directly or not."""
    async with serve(HeraldHttp, settings(), monkeypatch) as direct:
        reader, writer = await asyncio.open_connection("127.0.0.1", direct.port)
        timers = []
        for i in range(3):
            if path == "/healthz":
                writer.write(b"GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n")
            else:
                writer.write(post(path, AUTH, orjson.dumps({**MSG, "id": f"t{i}"})))
            await read_reply(reader)
            timers.append(direct.made[0].timeout_keep_alive_task)
        assert timers[0] is not None
        assert all(t is timers[0] for t in timers)
        writer.close()


async def test_an_idle_connection_is_closed_after_keep_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serve(HeraldHttp, settings(), monkeypatch, keep_alive=0.2) as direct:
        reader, writer = await asyncio.open_connection("127.0.0.1", direct.port)
        for i in range(2):
            writer.write(post("/v1/publish", AUTH, orjson.dumps({**MSG, "id": f"i{i}"})))
            assert (await read_reply(reader)).startswith(b"HTTP/1.1 202")
        assert await reader.read() == b""  # closed by the server once idle
        writer.close()
        (proto,) = direct.made
        assert proto.timeout_keep_alive_task is None


def _pipeline() -> tuple[bytes, int]:
    requests = [
        post("/v1/publish", AUTH, orjson.dumps({**MSG, "id": "p1"})),
        post("/v1/publish", AUTH, orjson.dumps({**MSG, "id": "p2", "x": 1})),  # FastAPI: 202
        post("/v1/publish", AUTH, orjson.dumps({**MSG, "id": "p3"})),
        post("/v1/publish", {**AUTH, "origin": "https://a.example"}, PLAIN),  # FastAPI
        post("/v1/publish", JSON_ONLY, PLAIN),  # 401, rendered here
        post("/v1/publish", AUTH, orjson.dumps({**MSG, "id": "p4"})),
    ]
    return b"".join(requests), len(requests)


JSON_ONLY = {"content-type": "application/json"}


async def test_pipelined_requests_are_answered_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request, n = _pipeline()
    async with pair(monkeypatch) as (direct, asgi):
        assert await direct.exchange(request, n) == await asgi.exchange(request, n)


# ---- a publish that suspends: the redis engine -------------------------------------


@pytest.fixture
async def redis_pair(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Stack, Stack]]:
    conf = settings(engine="redis", redis_url=redis_server.url)
    async with pair(monkeypatch, conf) as stacks:
        yield stacks


async def test_redis_publishes_resume_in_a_task_and_keep_their_order(
    redis_pair: tuple[Stack, Stack],
) -> None:
    direct, asgi = redis_pair
    request, n = _pipeline()
    got = await direct.exchange(request, n)
    assert got == await asgi.exchange(request, n)
    assert [r.split(b"\r\n", 1)[0] for r in got] == [
        b"HTTP/1.1 202 Accepted",
        b"HTTP/1.1 202 Accepted",
        b"HTTP/1.1 202 Accepted",
        b"HTTP/1.1 202 Accepted",
        b"HTTP/1.1 401 Unauthorized",
        b"HTTP/1.1 202 Accepted",
    ]
    # p1 suspended on Redis and was resumed by a Task; what came in behind it waited
    # in uvicorn's pipeline (ASGI cycles), as behind any request in flight.
    assert direct.tasks
    assert b'"p1"' in got[0] and b'"p4"' in got[5]


# ---- failures, early goodbyes, shutdown ---------------------------------------------


def _publish_raising(node: Node, monkeypatch: pytest.MonkeyPatch, suspend: bool) -> None:
    async def publish(*args: Any, **kwargs: Any) -> Any:
        if suspend:
            await asyncio.sleep(0)
        raise RuntimeError("engine bug")

    monkeypatch.setattr(node, "publish", publish)


@pytest.mark.parametrize("suspend", [False, True])
async def test_an_engine_bug_is_uvicorns_500_and_a_close(
    monkeypatch: pytest.MonkeyPatch, suspend: bool
) -> None:
    async with pair(monkeypatch) as (direct, asgi):
        for stack in (direct, asgi):
            _publish_raising(stack.node, monkeypatch, suspend)
        request = post("/v1/publish", AUTH, PLAIN)
        with logged() as records:
            (got,) = await direct.exchange(request)
            assert [r.getMessage() for r in records] == ["Exception in ASGI application\n"]
            assert records[0].exc_info is not None
            (want,) = await asgi.exchange(request)
        assert got == want
        assert got.startswith(b"HTTP/1.1 500")
        assert direct.tasks == (["task"] if suspend else [])


@contextlib.contextmanager
def logged() -> Iterator[list[logging.LogRecord]]:
    """Records of uvicorn's error log (it does not propagate) and asyncio's."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


@dataclass
class Gate:
    """Holds node.publish until released: a reply due while the client goes away."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    published: list[Any] = field(default_factory=list)

    def install(self, node: Node) -> None:
        """On this test's own node, which ends with the test."""
        real = node.publish

        async def publish(*args: Any, **kwargs: Any) -> Any:
            self.entered.set()
            await self.release.wait()
            outcome = await real(*args, **kwargs)
            self.published.append(outcome)
            return outcome

        node.publish = publish  # type: ignore[method-assign]

    async def held(self, stack: Stack) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection whose publish is held here, on `stack`."""
        self.install(stack.node)
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        writer.write(post("/v1/publish", AUTH, PLAIN))
        await self.entered.wait()
        return reader, writer


async def test_a_client_gone_before_its_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(HeraldHttp, settings(), monkeypatch) as direct:
        gate = Gate()
        _, writer = await gate.held(direct)
        writer.close()
        await _until(lambda: not direct.state.connections)
        with logged() as records:
            gate.release.set()
            await _until(lambda: not direct.state.tasks)
        assert records == []
        assert len(gate.published) == 1  # accepted, not lost
        (proto,) = direct.made
        assert proto.cycle is None


async def test_a_connection_lost_mid_body(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(HeraldHttp, settings(), monkeypatch) as direct:
        _, writer = await asyncio.open_connection("127.0.0.1", direct.port)
        with logged() as records:
            writer.write(post("/v1/publish", AUTH, PLAIN)[:-5])
            await _until(lambda: any(getattr(p, "_direct", None) for p in direct.made))
            writer.close()
            await _until(lambda: not direct.state.connections)
        assert records == []
        (proto,) = direct.made
        assert isinstance(proto, HeraldHttp)
        assert proto._direct is None and direct.asgi == direct.tasks == []


async def test_shutdown_with_a_reply_due_closes_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serve(HeraldHttp, settings(), monkeypatch) as direct:
        gate = Gate()
        reader, writer = await gate.held(direct)
        (proto,) = direct.made
        proto.shutdown()  # what uvicorn's graceful shutdown calls
        assert not proto.transport.is_closing()
        gate.release.set()
        reply = await read_reply(reader)
        assert reply.startswith(b"HTTP/1.1 202") and b"connection: close\r\n" in reply
        assert await reader.read() == b""
        writer.close()


@pytest.mark.parametrize("started", [False, True])
async def test_a_cancelled_publish_is_uvicorns_500(
    monkeypatch: pytest.MonkeyPatch, started: bool
) -> None:
    """A forced shutdown cancels request tasks: the reply is uvicorn's 500, then close,
    also when the Task was cancelled before it first ran."""
    async with serve(HeraldHttp, settings(), monkeypatch) as direct:
        gate = Gate()
        reader, writer = await gate.held(direct)
        (task,) = direct.state.tasks
        if started:
            await _until(lambda: task.get_coro().cr_await is not None)  # type: ignore[union-attr]
        with logged() as records:
            task.cancel()
            reply = await read_reply(reader)
        assert reply.startswith(b"HTTP/1.1 500") and reply.endswith(b"Internal Server Error")
        assert [r.getMessage() for r in records] == ["Exception in ASGI application\n"]
        assert await reader.read() == b""
        assert task.cancelled() and not direct.state.tasks
        writer.close()


async def test_writes_backing_up_leave_the_request_to_uvicorn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the transport's buffer full, uvicorn's cycle waits for the drain."""
    async with serve(HeraldHttp, settings(), monkeypatch) as direct:
        reader, writer = await asyncio.open_connection("127.0.0.1", direct.port)
        writer.write(post("/v1/publish", AUTH, PLAIN))
        assert (await read_reply(reader)).startswith(b"HTTP/1.1 202")
        (proto,) = direct.made
        proto.pause_writing()  # as the transport calls it over its high-water mark
        writer.write(post("/v1/publish", AUTH, orjson.dumps({**MSG, "id": "w"})))
        await _until(lambda: direct.asgi == ["/v1/publish"])
        proto.resume_writing()
        assert b'"w"' in await read_reply(reader)
        writer.close()


# ---- _rest: the rest of a coroutine whose first step ran outside a Task ---------------


async def _first_step(coro: Any) -> Awaitable[Any]:
    yielded = coro.send(None)
    return _rest(coro, yielded)


async def test_rest_resumes_values_and_exceptions() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def twice() -> int:
        a = await fut
        await asyncio.sleep(0)
        return a + 1

    rest = await _first_step(twice())
    task = asyncio.ensure_future(rest)
    fut.set_result(41)
    assert await task == 42

    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("x")

    with pytest.raises(KeyError):
        await await_(await _first_step(fails()))


async def await_(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def test_rest_passes_a_cancel_into_the_coroutine() -> None:
    seen: list[str] = []

    async def waits() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "never"

    task = asyncio.ensure_future(await_(await _first_step(waits())))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_the_gateways_own_config_finds_the_fast_path() -> None:
    """`herald serve` wraps the app (proxy headers): HeraldHttp finds the fast path behind."""
    config = build_config(settings())
    config.load()
    assert not isinstance(config.loaded_app, PublishFastPath)
    proto = HeraldHttp(config=config, server_state=ServerState(), app_state={})
    assert isinstance(proto._fast, PublishFastPath)

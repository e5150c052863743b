"""uvicorn's httptools protocol with a header deadline and a socket cap (`http=`).

uvicorn times out idle keep-alive connections, but not a connection that never
completes its request head: a socket that sends nothing, or half an upgrade
request, stays open forever and is not one of the WebSocket connections that
`HERALD_MAX_CONNECTIONS` counts. Here every request head must be complete within
`HERALD_HANDSHAKE_TIMEOUT` (408 otherwise, like nginx's `client_header_timeout`),
and every accepted socket, handshaking or upgraded, counts towards
`max_connections` plus a small headroom that keeps `/healthz` and the HTTP API
reachable when the WebSocket slots are full. Both the head deadline and uvicorn's
keep-alive idle timeout use one timer per connection that rechecks when it fires,
not a timer armed and cancelled per request.

It also serves the fast routes' plain case (gateway.fastpath: a plain `POST /v1/publish`
and the like) without an ASGI cycle, which cost about as much as Herald's own publish
(issue 14). When a request head ends (`on_headers_complete`), `_direct_request` decides:
a fast route (`fastpath.match`), a JSON body of known length under the limit with no
`Origin` (`fastpath.plain_headers`), a plain path (no query, no %-escapes), and nothing
of uvicorn's own to do: no request in flight before it on this connection, no
`Expect: 100-continue`, no concurrency limit or access log, writes not paused. Anything
else takes uvicorn's path unchanged (`super().on_headers_complete()`), and so does a
body that is not the plain case after all: `_fall_back` makes the cycle uvicorn would
have made, the body already in it, and marks the scope (`fastpath.FALLBACK`) so the
fast path hands it straight to FastAPI.

A request served here sits in `self.cycle` (`_Direct`) until its reply is written, so
pipelined requests queue behind it in uvicorn's pipeline and replies keep request order;
`shutdown` and the head timer read it as they read a cycle. Its body is collected in
`on_body`; on `on_message_complete`, `_serve` runs `PublishFastPath.answer` (the route
logic, shared with the ASGI path) by sending into the coroutine itself, in a copy of the
context as a Task would have. The memory engine's publish finishes in that first step:
no Task, the reply written from the parser callback. A publish that suspends (the
Redis backplane waits on a future) is handed to a Task that awaits `_rest`, which gives
the Task the future the coroutine yielded and then resumes the coroutine as the Task
resumes it (values, exceptions, cancellation). Routes whose first step may need a
Task (`Route.inline` false: a queue `receive` uses `asyncio.timeout`) get one from
the start. Replies are rendered as uvicorn's `RequestResponseCycle.send` writes them
(`_render`: status line, the server's default `date`/`server` headers, the reply's
headers, `connection: close` when not keeping alive); an unexpected exception is
logged and answered 500 and closed as uvicorn does; a client gone before its reply gets
nothing (the publish, once accepted, still completes); `on_response_complete` counts
the request (`limit_max_requests`) and starts the next pipelined one.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from gateway.fastpath import FALLBACK, Answer, PublishFastPath, Route, match, plain_headers
from gateway.wscodec import http_error

# Sockets allowed beyond max_connections for plain HTTP (probes, publishes).
HTTP_HEADROOM = 32


def _body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


_408 = http_error(408, "Request Timeout", _body("request_timeout", "request headers too slow"))
_503 = http_error(
    503,
    "Service Unavailable",
    _body("overloaded", "too many open connections"),
    "Retry-After: 1\r\n",
)


# What uvicorn answers when the app raises (RequestResponseCycle.send_500_response).
_500 = Answer(
    500,
    [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"21"),
        (b"connection", b"close"),
    ],
    b"Internal Server Error",
    False,
)


class _Direct:
    """A request served in the protocol: in `cycle`'s place while its reply is due."""

    __slots__ = (
        "authorization",
        "body",
        "keep_alive",
        "response_complete",
        "route",
        "scope",
        "start",
    )

    def __init__(
        self, route: Route, authorization: str | None, scope: Any, keep_alive: bool
    ) -> None:
        self.route = route
        self.authorization = authorization
        self.scope = scope
        self.start = time.perf_counter()
        self.body: list[bytes] = []
        # Read by uvicorn's `shutdown` (set to False) and HeraldHttp's head timer.
        self.keep_alive = keep_alive
        self.response_complete = False


@types.coroutine
def _rest(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Await the rest of `coro`, whose first step (run by the caller) yielded `yielded`.

    The Task awaiting this gets `yielded` (the future `coro` waits on) and resumes it as
    it would have resumed `coro`: what it sends or throws goes on into `coro`.
    """
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # thrown in by the Task: CancelledError
            resume: Any = functools.partial(coro.throw, exc)
        else:
            resume = functools.partial(coro.send, sent)
        try:
            yielded = resume()
        except StopIteration as done:
            return done.value


class HeraldHttp(HttpToolsProtocol):
    """One HTTP connection until it upgrades (then gateway.wsproto takes over)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        edge = self.app_state.get("edge")
        settings = edge.node.settings if edge is not None else None
        self._header_timeout: float | None = settings.handshake_timeout if settings else None
        self._max_sockets: int | None = (
            settings.max_connections + HTTP_HEADROOM if settings else None
        )
        self._header_timer: asyncio.TimerHandle | None = None
        # loop.time() when the request head in progress began; None between requests.
        self._head_since: float | None = None
        # loop.time() when the connection last became idle (a response done, nothing
        # read since); None while a request is in progress.
        self._idle_since: float | None = None
        # The app's publish fast path, behind uvicorn's wrappers (proxy headers).
        app = self.app
        while app is not None and not isinstance(app, PublishFastPath):
            app = getattr(app, "app", None)
        self._fast: PublishFastPath | None = app
        # The request whose head and body are being read, when served here.
        self._direct: _Direct | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # `connections` holds every socket of this server: HTTP ones and upgraded
        # WebSockets (gateway.wsproto adds itself), so a flood of silent sockets
        # counts the same as real clients.
        full = self._max_sockets is not None and len(self.connections) >= self._max_sockets
        super().connection_made(transport)
        if full:
            self.transport.write(_503)
            self.transport.close()
            return
        self._head_begins()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_since = None
        self._cancel_timers()
        self._direct = None
        if isinstance(self.cycle, _Direct):
            self.cycle = None  # its reply goes nowhere
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begins()  # each request of a keep-alive connection

    def on_headers_complete(self) -> None:
        self._head_since = None
        direct = self._direct_request()
        if direct is None:
            super().on_headers_complete()
            return
        self._direct = direct
        self.cycle = direct  # type: ignore[assignment]  # pipelined requests wait for it

    def on_body(self, body: bytes) -> None:
        if self._direct is None:
            super().on_body(body)
        else:
            self._direct.body.append(body)

    def on_message_complete(self) -> None:
        direct = self._direct
        if direct is None:
            super().on_message_complete()
            return
        self._direct = None
        self._serve(direct)

    # ---- the fast routes, served without an ASGI cycle ------------------------------

    def _direct_request(self) -> _Direct | None:
        """The request whose head just ended, if this protocol serves it itself: a fast
        route (gateway.fastpath) with nothing in flight before it and nothing of
        uvicorn's own to do (100-continue, a concurrency limit, access log, upgrade)."""
        fast = self._fast
        url = self.url
        if (
            fast is None
            or url[:1] != b"/"
            or not url.isascii()
            or b"%" in url  # uvicorn unquotes it
            or b"?" in url
            or self.expect_100_continue
            or self.access_log
            or self.limit_concurrency is not None
            or self.root_path
            or self.flow.write_paused  # uvicorn's send waits for the drain
            or not (self.cycle is None or self.cycle.response_complete)
            or self.parser.get_method() != b"POST"
            or self.parser.should_upgrade()
        ):
            return None
        path = url.decode("ascii")
        route = match("POST", path)
        if route is None:
            return None
        length, authorization = plain_headers(self.headers, fast.body_limit)
        if length < 0:
            return None
        # The scope as uvicorn's on_headers_complete fills it: the error handler's
        # Request and a fallback to FastAPI read it.
        scope = self.scope
        scope["method"] = "POST"
        version = self.parser.get_http_version()
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = path
        scope["raw_path"] = url
        scope["query_string"] = b""
        keep_alive = version != "1.0" and self.parser.should_keep_alive()
        return _Direct(route, authorization, scope, keep_alive)

    def _serve(self, direct: _Direct) -> None:
        """Answer `direct`: inline when its handler completes without suspending (the
        memory engine's publish), else in a Task that resumes it (Redis)."""
        assert self._fast is not None
        raw = direct.body[0] if len(direct.body) == 1 else b"".join(direct.body)
        direct.body = []
        coro = self._fast.answer(direct.route, raw, direct.authorization, direct.scope)
        context = contextvars.copy_context()  # what a Task per request would give
        if not direct.route.inline:
            task = self.loop.create_task(self._finish(direct, raw, coro), context=context)
            self._track(task, direct, coro)
            return
        try:
            yielded = context.run(coro.send, None)
        except StopIteration as done:
            self._reply(direct, raw, done.value)
        except Exception as exc:
            self._failed(direct, exc)
        else:
            rest = self._finish(direct, raw, _rest(coro, yielded))
            self._track(self.loop.create_task(rest, context=context), direct, coro)

    def _track(
        self, task: asyncio.Task[None], direct: _Direct, coro: Coroutine[Any, Any, Any]
    ) -> None:
        # As uvicorn's own request tasks: a graceful shutdown waits for them.
        self.tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, direct, coro))

    def _task_done(
        self, direct: _Direct, coro: Coroutine[Any, Any, Any], task: asyncio.Task[None]
    ) -> None:
        self.tasks.discard(task)
        if task.cancelled() and not direct.response_complete:
            # Cancelled before it ever ran, so `_finish` could not answer: the same 500,
            # and the route's coroutine closed now rather than by the collector.
            coro.close()
            self._failed(direct, asyncio.CancelledError())

    async def _finish(
        self, direct: _Direct, raw: bytes, answer: Coroutine[Any, Any, Answer | None]
    ) -> None:
        try:
            reply = await answer
        except BaseException as exc:
            # As uvicorn's run_asgi: a request cancelled (a forced shutdown) gets its
            # 500 too; the cancellation goes on.
            self._failed(direct, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._reply(direct, raw, reply)

    def _failed(self, direct: _Direct, exc: BaseException) -> None:
        # What uvicorn does when the ASGI app raises: log it, answer 500 and close.
        self.logger.error("Exception in ASGI application\n", exc_info=exc)
        direct.keep_alive = False
        self._reply(direct, b"", _500)

    def _reply(self, direct: _Direct, raw: bytes, answer: Answer | None) -> None:
        if answer is None:
            self._fall_back(direct, raw)
            return
        if direct.response_complete:
            return
        direct.response_complete = True
        if self.transport.is_closing():
            return  # the client is gone (uvicorn's send drops the reply too)
        self.transport.write(_render(answer, self.server_state.default_headers, direct.keep_alive))
        if not direct.keep_alive:
            self.transport.close()
        if answer.plain:
            assert self._fast is not None
            self._fast.observe(direct.route.template, answer.status, direct.start)
        self.on_response_complete()  # counts it, then the next pipelined request

    def _fall_back(self, direct: _Direct, raw: bytes) -> None:
        """Not the plain case: the app (FastAPI behind the fast path) answers, its body
        replayed, in an ASGI cycle as uvicorn would have made for it."""
        direct.scope[FALLBACK] = True
        # RequestResponseCycle's first arguments, in uvicorn's order.
        where = (direct.scope, self.transport, self.flow, self.logger, self.access_logger)
        headers = self.server_state.default_headers
        cycle = RequestResponseCycle(
            *where, self.access_log, headers, asyncio.Event(), False, direct.keep_alive,
            on_response=self.on_response_complete,
        )  # fmt: skip
        cycle.body += raw
        cycle.more_body = False
        cycle.message_event.set()
        if self.cycle is direct:  # type: ignore[comparison-overlap]
            self.cycle = cycle
        if self.transport.is_closing():
            cycle.disconnected = True
        self._start_asgi_task(cycle, self.app)

    def handle_websocket_upgrade(self) -> None:
        # The upgraded socket never reads another HTTP head: drop the timer now, or
        # it would keep this protocol (parser, buffers, scope: ~6.5 KiB) alive for
        # up to `_header_timeout` after every WebSocket connect (the keep-alive
        # timer likewise).
        self._cancel_timers()
        super().handle_websocket_upgrade()

    def shutdown(self) -> None:
        if isinstance(self.cycle, _Direct) and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # its reply closes the connection
            return
        super().shutdown()

    def _cancel_timers(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    # ---- keep-alive: uvicorn's idle timeout with one timer per connection ------------
    # uvicorn arms a timer after every response and cancels it on the next request's
    # first bytes: 3.5 µs a request on the benchmark machine, a twentieth of a plain
    # publish (issue 14). Here, as for the head deadline, the timer stays armed and
    # rechecks when it fires: a connection that became idle since gets the rest of
    # its `timeout_keep_alive`, a busy one lets the timer go until its next response.

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # data came in: not idle; the timer, if armed, stays

    def on_response_complete(self) -> None:
        # uvicorn's, but for how the idle timer is armed.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_since = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = now = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_at(
                now + self.timeout_keep_alive, self._check_idle
            )

    def _check_idle(self) -> None:
        self.timeout_keep_alive_task = None
        deadline = self._deadline(self._idle_since, self.timeout_keep_alive, self._check_idle)
        if deadline is not None:
            self.timeout_keep_alive_task = deadline
        elif self._idle_since is not None and not self.transport.is_closing():
            self.transport.close()  # uvicorn's timeout_keep_alive_handler

    def _deadline(
        self, since: float | None, timeout: float, check: Callable[[], None]
    ) -> asyncio.TimerHandle | None:
        """A timer for `check` at `since + timeout` if that is still ahead, else None."""
        if since is None:
            return None
        deadline = since + timeout
        if self.loop.time() < deadline - 0.001:  # timers run to the millisecond
            return self.loop.call_at(deadline, check)
        return None

    def _head_begins(self) -> None:
        # One timer per connection, not one per request: arming and cancelling a
        # timer for every request of a keep-alive connection cost as much as a tenth
        # of a plain publish (issue 14). A timer that fires early re-arms itself for
        # the head in progress, so each head still gets exactly `_header_timeout`.
        if self._header_timeout is None:
            return
        self._head_since = now = self.loop.time()
        if self._header_timer is None:
            self._header_timer = self.loop.call_at(now + self._header_timeout, self._check_head)

    def _check_head(self) -> None:
        self._header_timer = None
        since = self._head_since
        if since is None or self._header_timeout is None or self.transport.is_closing():
            return  # between requests: the next head arms the timer again
        self._header_timer = self._deadline(since, self._header_timeout, self._check_head)
        if self._header_timer is not None:
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_408)  # no response in flight: 408 is safe to send
        self.transport.close()


# default_headers (uvicorn renews the list each second: `date`) -> their bytes.
_defaults: tuple[list[tuple[bytes, bytes]] | None, bytes] = (None, b"")


def _render(answer: Answer, default_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    """The reply as uvicorn's RequestResponseCycle.send writes it for the same messages."""
    global _defaults
    if _defaults[0] is not default_headers:
        _defaults = (default_headers, b"".join(b"%s: %s\r\n" % h for h in default_headers))
    head = [STATUS_LINE[answer.status], _defaults[1]]
    close = False
    for name, value in answer.headers:
        if name == b"connection":
            close = True
        head.append(b"%s: %s\r\n" % (name, value))
    if not keep_alive and not close:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    head.append(answer.body)
    return b"".join(head)

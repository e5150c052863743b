"""Herald's WebSocket edge: a uvicorn protocol class (`ws=`) for `GET /ws`.

Why not FastAPI's `WebSocket`: measured on this machine (docs/architecture.md), the
per-socket `await websocket.send_text()` costs 2–3.5× a raw `transport.write`, and
the stock ASGI connection (a task, a receive queue, the middleware stack's frames)
holds ~31 KiB per idle socket. Here a connection is one small object with slots:
no task, no queue. uvicorn still parses HTTP and hands the upgrade over; FastAPI
serves every other route. The fanout hub writes pre-framed bytes straight to
`transport`, so a broadcast costs one `write()` per socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Coroutine
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import orjson

from fanout.framing import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_frame,
    frame,
    text_frame,
)
from gateway.wscodec import (
    MAX_HANDSHAKE_BYTES,
    SUBPROTOCOL,
    FrameParser,
    ProtocolViolation,
    http_error,
    parse_handshake,
    response_101,
)
from shared.auth import Principal, bearer
from shared.errors import Forbidden, HeraldError, InvalidRequest, RateLimited, Unauthorized
from shared.ratelimit import TokenBucket

if TYPE_CHECKING:
    from fanout.node import Node
    from fanout.queues.consumer import QueueConsumer
    from gateway.edge import Edge

log = logging.getLogger("herald.ws")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL = 1002
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012
CLOSE_TRY_LATER = 1013
CLOSE_UNAUTHORIZED = 4401
MAX_BAD_FRAMES = 10
CLOSE_GRACE_S = 5.0  # how long a closing peer may stall before it is aborted

# Commands of one connection take effect in order (SPEC §4): while an async command
# runs, later ones wait in a queue. Past MAX_PENDING queued the socket stops being
# read, so the queue holds at most what one read brings: a 256 KiB read of the
# smallest commands (8 bytes each) is 32,768 of them. MAX_QUEUED is the safety net
# past that (a transport reading more at once): close 1008.
MAX_PENDING = 64
MAX_QUEUED = 32_768
# Publishes and acks may overlap (they do not change what this socket receives), up
# to this many at once; then they queue like any other command.
MAX_INFLIGHT = 64


class ConnState(IntEnum):
    """Where a connection is in its life; it only ever moves forward."""

    HANDSHAKE = 0
    AUTH = 1  # upgraded, waiting for a first-frame `auth`
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


_HANDSHAKE, _AUTH, _OPEN, _CLOSING, _CLOSED = tuple(ConnState)
_PING = frame(OP_PING, b"")
# A client error that counts towards the 10-malformed-frames limit (SPEC §4).
_BAD_INPUT = ("invalid_request", "invalid_topic", "invalid_filter", "payload_too_large")


class HeraldWebSocket(asyncio.Protocol):
    """One client connection: handshake, frames, commands, keep-alive, drain."""

    __slots__ = (
        "_bad",
        "_bucket",
        "_buf",
        "_close_timer",
        "_consumers",
        "_drain",
        "_exclusive",
        "_expiry",
        "_inflight",
        "_limited",
        "_parser",
        "_queue",
        "_read_paused",
        "_state",
        "_tasks",
        "_write_paused",
        "edge",
        "last_seen",
        "node",
        "ping_sent",
        "principal",
        "server_state",
        "transport",
    )

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.edge: Edge = app_state["edge"]
        self.node: Node = self.edge.node
        self.server_state = server_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.principal: Principal | None = None
        self.last_seen = 0.0
        self.ping_sent = 0.0
        self._state = _HANDSHAKE
        self._buf: bytearray | bytes = bytearray()
        self._parser: FrameParser | None = None
        self._bad = 0
        self._tasks: set[asyncio.Task[None]] | None = None
        self._consumers: dict[str, QueueConsumer] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        # The command sequencer and flow control (see MAX_PENDING).
        self._queue: deque[bytes] | None = None
        self._exclusive = False
        self._inflight = 0
        self._write_paused = False
        self._read_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._bucket: TokenBucket | None = None
        self._limited = 0

    # ---- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)
        # Every byte queued for this socket counts against send_buffer_bytes: past it
        # asyncio calls pause_writing, and the socket stops being read (so it cannot
        # make the server queue more replies, pongs or errors) until it drains.
        limit = self.node.settings.send_buffer_bytes
        self.transport.set_write_buffer_limits(high=limit, low=limit // 4)
        self._bucket = self.edge.command_bucket()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
        was_open = self._state in (_AUTH, _OPEN, _CLOSING)
        self._state = _CLOSED
        self._queue = None
        if self._expiry is not None:
            self._expiry.cancel()
        self.node.hub.remove_sink(self)
        if was_open:
            self.edge.disconnected(self)
        if self._tasks:
            for t in self._tasks:
                t.cancel()
        if self._consumers:
            for consumer in self._consumers.values():
                self._spawn_detached(consumer.close())

    def data_received(self, data: bytes) -> None:
        if self._state == _HANDSHAKE:
            self._handshake_data(data)
            return
        if self._state == _CLOSED or self._parser is None:
            return
        self.last_seen = self.edge.loop.time()
        try:
            messages = self._parser.feed(data)
        except ProtocolViolation as exc:
            # RFC 6455 7.1.7 "fail the connection": the parser cannot resync, so act on
            # what came before the bad frame, send the close frame and drop TCP once
            # it is flushed.
            self._parser = None
            self._dispatch(exc.messages)
            self.close(exc.code, exc.reason)
            self.transport.close()
            return
        self._dispatch(messages)

    def _dispatch(self, messages: list[tuple[int, bytes]]) -> None:
        for opcode, payload in messages:
            if self._state == _CLOSED:
                return
            if opcode == OP_TEXT:
                self._on_text(payload)
            elif opcode == OP_PONG:
                self.ping_sent = 0.0
            elif opcode == OP_PING:
                # Bounded: a peer that does not read its pongs is soon not read either.
                self.transport.write(frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._on_close_frame(payload)
            elif opcode == OP_BINARY:
                self._on_binary(payload)

    def _on_binary(self, payload: bytes) -> None:
        self._bad_input(None, InvalidRequest("binary frames are not supported"))

    def pause_writing(self) -> None:
        """The write buffer passed send_buffer_bytes: read nothing more until it drains.

        Broadcasts keep their own policy (drop or disconnect, in the hub); what stops
        here is everything the client can cause itself: replies, pongs, errors.
        """
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        """The write buffer drained below a quarter of the bound: carry on."""
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)
        self._pump()

    async def drained(self) -> None:
        """Return once the write buffer is under the bound (at once when it is)."""
        if self._write_paused:
            if self._drain is None:
                self._drain = self.edge.loop.create_future()
            await self._drain

    def eof_received(self) -> bool | None:
        return None

    # ---- handshake -------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HANDSHAKE_BYTES:
                self._reject(
                    431, "Request Header Fields Too Large", "invalid_request", "headers too large"
                )
            return
        rest = bytes(self._buf[end + 4 :])
        head = bytes(self._buf[:end])
        self._buf = b""  # the handshake is over: keep no buffer per connection
        try:
            hs = parse_handshake(head)
        except ProtocolViolation:
            self._reject(400, "Bad Request", "invalid_request", "malformed request")
            return
        if hs.path != "/ws":
            self._reject(404, "Not Found", "not_found", f"no WebSocket endpoint at {hs.path}")
            return
        key = hs.key
        if hs.method != "GET" or not hs.is_websocket_upgrade() or not key:
            self._reject(400, "Bad Request", "invalid_request", "not a WebSocket upgrade")
            return
        if hs.headers.get("sec-websocket-version") != "13":
            self._reject(
                426,
                "Upgrade Required",
                "invalid_request",
                "WebSocket version 13 only",
                "Sec-WebSocket-Version: 13\r\n",
            )
            return
        # RFC 6455 4.2.2: answer one offered subprotocol, or refuse; browsers abort a
        # connection whose offer is ignored.
        offered = hs.subprotocols
        if offered and SUBPROTOCOL not in offered:
            self._reject(
                400, "Bad Request", "invalid_request", f"unsupported subprotocol: use {SUBPROTOCOL}"
            )
            return
        if not self.node.ready():
            self._reject(
                503,
                "Service Unavailable",
                "draining",
                "not ready; reconnect elsewhere",
                "Retry-After: 1\r\n",
            )
            return
        if self.edge.connection_count >= self.node.settings.max_connections:
            self._reject(
                503,
                "Service Unavailable",
                "overloaded",
                "too many connections",
                "Retry-After: 1\r\n",
            )
            return
        self.transport.write(response_101(key, SUBPROTOCOL if offered else None))
        self._parser = FrameParser(self.node.settings.max_frame_bytes)
        self.last_seen = self.edge.loop.time()
        self.edge.connected(self)
        credential = hs.query_value("token") or bearer(hs.headers.get("authorization"))
        auth = self.node.auth
        if not auth.enabled:
            self.principal = auth.authenticate(None)
            self._state = _OPEN
        elif credential:
            try:
                self._set_principal(auth.authenticate(credential))
                self._state = _OPEN
            except Unauthorized as exc:
                self.close(CLOSE_UNAUTHORIZED, exc.message[:100])
                return
        else:
            # SPEC §4: the first frame may carry the token, within auth_timeout.
            self._state = _AUTH
            self._close_timer = self.edge.loop.call_later(
                self.node.settings.auth_timeout, self._auth_timeout
            )
        if rest:
            self.data_received(rest)

    def _reject(self, status: int, reason: str, code: str, message: str, extra: str = "") -> None:
        body = orjson.dumps({"error": {"code": code, "message": message}})
        self.transport.write(http_error(status, reason, body, extra))
        self._state = _CLOSED
        self.transport.close()

    def _auth_timeout(self) -> None:
        if self._state == _AUTH:
            self.close(CLOSE_UNAUTHORIZED, "no credentials")

    # ---- sending ---------------------------------------------------------------------

    def send(self, obj: dict[str, Any]) -> None:
        """Write one JSON reply (not shared, so not worth caching)."""
        if self._state in (_AUTH, _OPEN):
            self.transport.write(text_frame(orjson.dumps(obj)))

    def send_error(self, cmd_id: Any, exc: HeraldError) -> None:
        out: dict[str, Any] = {"op": "error", **exc.to_dict()}
        if cmd_id is not None:
            out["id"] = cmd_id
        self.send(out)

    def send_ping(self, now: float) -> None:
        self.ping_sent = now
        self.transport.write(_PING)

    def on_dead(self) -> None:
        log.info("closing a connection that did not answer ping")
        self.transport.abort()  # connection_lost does the bookkeeping

    def on_slow(self) -> None:
        """`disconnect` policy: its buffer is full, so tell it 1013 and let go."""
        self.close(CLOSE_TRY_LATER, "slow consumer", abort_after=CLOSE_GRACE_S)

    def close(self, code: int, reason: str = "", abort_after: float = CLOSE_GRACE_S) -> None:
        """Start the closing handshake; the socket is dropped if the peer stalls."""
        if self._state in (_CLOSING, _CLOSED):
            return
        self._state = _CLOSING
        self.node.hub.remove_sink(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.transport.write(close_frame(code, reason))
        self._close_timer = self.edge.loop.call_later(abort_after, self._abort)

    def _abort(self) -> None:
        if self._state != _CLOSED:
            self.transport.abort()

    def _on_close_frame(self, payload: bytes) -> None:
        if self._state != _CLOSING:
            # The parser refused invalid codes (1002), so echo the peer's (RFC 6455 5.5.1).
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else CLOSE_NORMAL
            self._state = _CLOSING
            self.node.hub.remove_sink(self)
            self.transport.write(close_frame(code))
        self.transport.close()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown (SIGTERM): tell the client where to go, then 1012."""
        self.edge.start_drain()
        if self._state not in (_AUTH, _OPEN):
            if self._state == _HANDSHAKE:
                self.transport.close()
            return
        # Jitter spreads the reconnect storm over the drain window (LESSONS).
        spread = min(5000, int(self.node.settings.drain_timeout * 500))
        self.send({"op": "reconnect", "reason": "draining", "after_ms": random.randint(0, spread)})
        self.close(CLOSE_RESTART, "server restart")

    # ---- commands --------------------------------------------------------------------

    def _on_text(self, payload: bytes) -> None:
        if self._state not in (_AUTH, _OPEN):
            return  # closing: nothing it asks for could be answered
        bucket = self._bucket
        if bucket is not None:
            retry = bucket.take(self.edge.loop.time())
            if retry:
                self._rate_limited(retry)
                return
            self._limited = 0
        queue = self._queue
        if queue or self._blocked():
            # An earlier command is still running: keep the order (SPEC §4).
            if queue is None:
                queue = self._queue = deque()
            queue.append(payload)
            if len(queue) > MAX_QUEUED:
                self.close(CLOSE_POLICY, "too many pending commands")
            elif len(queue) >= MAX_PENDING:
                self._update_reading()
            return
        self._run(payload)

    def _blocked(self) -> bool:
        return self._exclusive or self._write_paused or self._inflight >= MAX_INFLIGHT

    def _pump(self) -> None:
        """Run queued commands until one must be waited for, then re-check reading."""
        queue = self._queue
        while queue and not self._blocked() and self._state in (_AUTH, _OPEN):
            self._run(queue.popleft())
        self._update_reading()

    def _update_reading(self) -> None:
        if self._state in (_CLOSING, _CLOSED):
            return
        queued = len(self._queue) if self._queue else 0
        pause = self._write_paused or queued >= MAX_PENDING
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _rate_limited(self, retry_after: float) -> None:
        self._limited += 1
        if self._limited > MAX_BAD_FRAMES:
            self.close(CLOSE_POLICY, "rate limit exceeded")
            return
        exc = RateLimited(
            "too many commands; slow down",
            details={"retry_after_ms": max(1, round(retry_after * 1000))},
        )
        self.send_error(None, exc)

    def _run(self, payload: bytes) -> None:
        try:
            cmd = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._bad_input(None, InvalidRequest("frame is not valid JSON"))
            return
        if not isinstance(cmd, dict):
            self._bad_input(None, InvalidRequest("a command is a JSON object"))
            return
        cmd_id = cmd.get("id")
        if cmd_id is not None and (isinstance(cmd_id, bool) or not isinstance(cmd_id, int | str)):
            self._bad_input(None, InvalidRequest("'id' must be an integer or a string"))
            return
        op = cmd.get("op")
        if self._state == _AUTH and op != "auth":
            self.close(CLOSE_UNAUTHORIZED, "authenticate first")
            return
        handler = self.edge.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            self._bad_input(cmd_id, InvalidRequest(f"unknown op {op!r}"))
            return
        try:
            handler(self, cmd)
        except HeraldError as exc:
            self._command_failed(cmd_id, exc)
            return
        self._bad = 0

    def _command_failed(self, cmd_id: Any, exc: HeraldError) -> None:
        if exc.code in _BAD_INPUT:
            self._bad_input(cmd_id, exc)
        else:
            self._bad = 0
            self.send_error(cmd_id, exc)

    def _bad_input(self, cmd_id: Any, exc: HeraldError) -> None:
        self.send_error(cmd_id, exc)
        self._bad += 1
        if self._bad >= MAX_BAD_FRAMES:
            self.close(CLOSE_POLICY, "too many malformed frames")

    def authenticate(self, token: object) -> Principal:
        """The `auth` command: first credentials, or a fresh token for the same subject.

        A refresh that fails leaves the connection on its current token (it still
        ends at that token's `exp`); a first `auth` that fails closes it 4401.
        """
        if not isinstance(token, str):
            raise Unauthorized("'token' must be a string")
        refresh = self._state == _OPEN and self.node.auth.enabled
        try:
            principal = self.node.auth.authenticate(token)
        except Unauthorized as exc:
            if not refresh:
                self.close(CLOSE_UNAUTHORIZED, exc.message[:100])
            raise
        old = self.principal
        if refresh and old is not None and principal.sub != old.sub:
            raise Forbidden("a refreshed token must be for the same subject")
        self._set_principal(principal)
        if self._state == _AUTH:
            self._state = _OPEN
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
        elif refresh:
            self._end_disallowed(principal)
        return principal

    def _set_principal(self, principal: Principal) -> None:
        """Adopt `principal` and time the connection to its token's `exp`."""
        self.principal = principal
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if principal.exp is None:
            return  # API keys never expire
        left = principal.exp - time.time()
        warn = left - self.node.settings.token_refresh_window
        # Later, not now: the handshake sets the principal before the socket is open.
        self._expiry = self.edge.loop.call_later(max(0.0, warn), self._token_expiring)

    def _token_expiring(self) -> None:
        principal = self.principal
        if principal is None or principal.exp is None or self._state not in (_AUTH, _OPEN):
            return
        left = principal.exp - time.time()
        self.send({"op": "token_expiring", "exp": principal.exp, "in_ms": max(0, int(left * 1000))})
        self._expiry = self.edge.loop.call_later(max(0.0, left), self._token_expired)

    def _token_expired(self) -> None:
        self._expiry = None
        self.close(CLOSE_UNAUTHORIZED, "token expired")

    def _end_disallowed(self, principal: Principal) -> None:
        """End what the refreshed claims no longer allow, each with an error frame:
        subscriptions (carrying `sub`), and queue consumers when admin was dropped
        (carrying `queue`)."""
        hub = self.node.hub
        for key, pattern in list(hub.patterns_of(self).items()):
            if not principal.can_subscribe(pattern):
                hub.unsubscribe(self, key)
                exc = Forbidden(f"the new token does not allow {pattern!r}")
                self.send({"op": "error", **exc.to_dict(), "sub": key})
        if self._consumers and not principal.admin:
            for queue, consumer in list(self._consumers.items()):
                del self._consumers[queue]
                self._spawn_detached(consumer.close())
                exc = Forbidden("the new token is not an admin token: consuming ends")
                self.send({"op": "error", **exc.to_dict(), "queue": queue})

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise Forbidden("not authenticated")
        return self.principal

    def spawn(
        self, cmd_id: Any, coro: Coroutine[Any, Any, None], *, exclusive: bool = True
    ) -> None:
        """Run an async command; its HeraldError becomes an `error` reply.

        An `exclusive` command (one that changes what this socket receives) holds
        back every later command until it is done; others only count in flight.
        """
        task = self.edge.loop.create_task(self._guard(cmd_id, coro))
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        if exclusive:
            self._exclusive = True
        else:
            self._inflight += 1
        task.add_done_callback(self._command_done if exclusive else self._inflight_done)

    def _command_done(self, task: asyncio.Task[None]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
        self._exclusive = False
        self._pump()

    def _inflight_done(self, task: asyncio.Task[None]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
        self._inflight -= 1
        self._pump()

    async def _guard(self, cmd_id: Any, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except HeraldError as exc:
            self._command_failed(cmd_id, exc)
        except Exception:
            log.exception("command failed")
            self.send_error(cmd_id, HeraldError("internal error"))

    def _spawn_detached(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.edge.loop.create_task(coro)
        self.edge.background.add(task)
        task.add_done_callback(self.edge.background.discard)

    def consumers(self) -> dict[str, QueueConsumer]:
        if self._consumers is None:
            self._consumers = {}
        return self._consumers

    @property
    def is_open(self) -> bool:
        return self._state == _OPEN

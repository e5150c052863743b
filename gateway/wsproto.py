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
from collections.abc import Coroutine
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
from shared.errors import Forbidden, HeraldError, InvalidRequest, Unauthorized

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

_HANDSHAKE, _AUTH, _OPEN, _CLOSING, _CLOSED = range(5)
_PING = frame(OP_PING, b"")
# A client error that counts towards the 10-malformed-frames limit (SPEC §4).
_BAD_INPUT = ("invalid_request", "invalid_topic", "invalid_filter", "payload_too_large")


class HeraldWebSocket(asyncio.Protocol):
    """One client connection: handshake, frames, commands, keep-alive, drain."""

    __slots__ = (
        "_bad",
        "_buf",
        "_close_timer",
        "_consumers",
        "_parser",
        "_state",
        "_tasks",
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

    # ---- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
        was_open = self._state in (_AUTH, _OPEN, _CLOSING)
        self._state = _CLOSED
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
                self.transport.write(frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._on_close_frame(payload)
            elif opcode == OP_BINARY:
                self._on_binary(payload)

    def _on_binary(self, payload: bytes) -> None:
        self._bad_input(None, InvalidRequest("binary frames are not supported"))

    def pause_writing(self) -> None:
        """Flow control is the hub's send-buffer limit, not asyncio's high-water mark."""

    def resume_writing(self) -> None:
        """See `pause_writing`."""

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
                self.principal = auth.authenticate(credential)
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
        if not isinstance(token, str):
            raise Unauthorized("'token' must be a string")
        try:
            principal = self.node.auth.authenticate(token)
        except Unauthorized as exc:
            self.close(CLOSE_UNAUTHORIZED, exc.message[:100])
            raise
        self.principal = principal
        if self._state == _AUTH:
            self._state = _OPEN
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
        return principal

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise Forbidden("not authenticated")
        return self.principal

    def spawn(self, cmd_id: Any, coro: Coroutine[Any, Any, None]) -> None:
        """Run an async command; its HeraldError becomes an `error` reply."""
        task = self.edge.loop.create_task(self._guard(cmd_id, coro))
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

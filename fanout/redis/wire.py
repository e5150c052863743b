"""One raw command connection to a single Redis: pre-encoded pipelines, replies in order.

The publisher's hot path (issue 14). redis-py spends about 150 µs of CPU on one
pipeline round trip (connection pool, retry and timeout wrappers, events, command
packing); this connection is a plain asyncio protocol with a hiredis reader, the
same as the pub/sub listener's: the caller encodes its commands once (RESP) and
gets the raw replies back, in order, through a callback, without a task switch.

Failure semantics match the driver's with `no_retry()`: nothing is ever resent.
A lost connection or a reply later than `timeout_s` fails every request in flight
(the caller answers 503) and the next request connects again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Replies of one request, or the failure of the whole connection.
Done = Callable[[list[Any] | Exception], None]


def encode_command(*args: bytes | str | int) -> bytes:
    """RESP encoding of one command."""
    out = [b"*%d\r\n" % len(args)]
    append = out.append
    for a in args:
        b = a if type(a) is bytes else str(a).encode()
        append(b"$%d\r\n" % len(b))
        append(b)
        append(b"\r\n")
    return b"".join(out)


def reply_error(err: hiredis.ReplyError) -> ResponseError:
    """A Redis error reply as the exception redis-py would have raised for it."""
    text = str(err)
    if text.startswith("NOSCRIPT"):
        return NoScriptError(text)
    return ResponseError(text)


class _Request:
    __slots__ = ("done", "n", "replies", "sent")

    def __init__(self, n: int, done: Done, sent: float) -> None:
        self.n = n
        self.done = done
        self.sent = sent
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    def __init__(self, wire: CommandWire) -> None:
        self.wire = wire
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: deque[_Request] = deque()
        self.closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                break
            if not waiting:  # nothing asked for this: the stream is out of step
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            req = waiting[0]
            if isinstance(reply, hiredis.ReplyError):
                reply = reply_error(reply)
            req.replies.append(reply)
            if len(req.replies) == req.n:
                waiting.popleft()
                req.done(req.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc else ""
        self.fail(RedisConnectionError(f"connection to Redis lost{detail}"))

    def fail(self, exc: Exception) -> None:
        if self.closed is None:
            self.closed = exc
        if self.transport is not None:
            self.transport.abort()
        waiting, self.waiting = self.waiting, deque()
        self.wire._lost(self)
        for req in waiting:
            req.done(exc)


class CommandWire:
    """A lazily (re)connected command connection to one Redis node."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        handshake: list[bytes] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.host = host
        self.port = port
        self._handshake = handshake or []  # AUTH, SELECT: sent first, each must answer OK
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout_s
        self._timeout = timeout_s
        self._proto: _Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        proto = self._proto
        return proto is not None and proto.closed is None

    async def connect(self) -> None:
        """Open the connection (and authenticate) unless it is open."""
        if self.connected:
            return
        loop = asyncio.get_running_loop()
        proto: _Protocol
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port, ssl=self._ssl
                )
        except TimeoutError:
            raise RedisTimeoutError("timed out connecting to Redis") from None
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from None
        self._proto = proto
        if self._handshake:
            fut: asyncio.Future[list[Any] | Exception] = loop.create_future()

            def done(replies: list[Any] | Exception) -> None:
                if not fut.done():  # the connecting call may have been cancelled
                    fut.set_result(replies)

            self.request(b"".join(self._handshake), len(self._handshake), done)
            try:
                replies = await fut
            except BaseException:
                proto.fail(RedisConnectionError("connecting to Redis was cancelled"))
                raise
            if isinstance(replies, Exception):
                raise replies
            failed = next((r for r in replies if isinstance(r, Exception)), None)
            if failed is not None:
                proto.fail(RedisConnectionError(f"Redis refused the connection: {failed}"))
                raise failed

    def request(self, payload: bytes, n: int, done: Done) -> None:
        """Send `n` encoded commands; `done` gets their `n` replies (errors as
        exceptions in their slots), or the exception that closed the connection.

        Call `connect` first; on a closed connection `done` fails at once.
        """
        proto = self._proto
        if proto is None or proto.closed is not None or proto.transport is None:
            done(RedisConnectionError("not connected to Redis"))
            return
        loop = asyncio.get_running_loop()
        proto.waiting.append(_Request(n, done, loop.time()))
        proto.transport.write(payload)
        if self._timer is None:
            self._timer = loop.call_later(self._timeout, self._expired)

    def close(self) -> None:
        """Drop the connection; requests in flight fail."""
        proto = self._proto
        if proto is not None:
            proto.fail(RedisConnectionError("connection to Redis closed"))

    # ---- from the protocol ----------------------------------------------------------

    def _lost(self, proto: _Protocol) -> None:
        if proto is self._proto:
            self._proto = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _expired(self) -> None:
        # One timer at a time, not one per request: when it fires, the oldest request
        # still waiting decides whether the connection is dead or when to look again.
        self._timer = None
        proto = self._proto
        if proto is None or not proto.waiting:
            return
        loop = asyncio.get_running_loop()
        deadline = proto.waiting[0].sent + self._timeout
        if loop.time() >= deadline:
            proto.fail(RedisTimeoutError(f"no reply from Redis within {self._timeout:g}s"))
        else:
            self._timer = loop.call_at(deadline, self._expired)

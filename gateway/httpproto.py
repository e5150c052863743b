"""uvicorn's httptools protocol with a header deadline and a socket cap (`http=`).

uvicorn times out idle keep-alive connections, but not a connection that never
completes its request head: a socket that sends nothing, or half an upgrade
request, stays open forever and is not one of the WebSocket connections that
`HERALD_MAX_CONNECTIONS` counts. Here every request head must be complete within
`HERALD_HANDSHAKE_TIMEOUT` (408 otherwise, like nginx's `client_header_timeout`),
and every accepted socket, handshaking or upgraded, counts towards
`max_connections` plus a small headroom that keeps `/healthz` and the HTTP API
reachable when the WebSocket slots are full.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begins()  # each request of a keep-alive connection

    def on_headers_complete(self) -> None:
        self._head_since = None
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        # The upgraded socket never reads another HTTP head: drop the timer now, or
        # it would keep this protocol (parser, buffers, scope: ~6.5 KiB) alive for
        # up to `_header_timeout` after every WebSocket connect.
        self._cancel_header_timer()
        super().handle_websocket_upgrade()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

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
        deadline = since + self._header_timeout
        if self.loop.time() < deadline - 0.001:  # timers run to the millisecond
            self._header_timer = self.loop.call_at(deadline, self._check_head)
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_408)  # no response in flight: 408 is safe to send
        self.transport.close()

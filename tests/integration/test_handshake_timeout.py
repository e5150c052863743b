"""Handshake deadline and socket cap on a real `herald serve` (issue 9).

Silent sockets and half-sent upgrade requests used to stay open forever and were
not counted towards HERALD_MAX_CONNECTIONS.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from gateway.httpproto import HTTP_HEADROOM
from procs import MS, HeraldServer
from wsclient import connect, recv_json

pytestmark = pytest.mark.integration

MAX_CONNECTIONS = 8
PARTIAL_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
)


@pytest.fixture
def server() -> Iterator[HeraldServer]:
    s = HeraldServer(
        env={
            "HERALD_HANDSHAKE_TIMEOUT": str(500 * MS),
            "HERALD_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        }
    ).start()
    try:
        yield s
    finally:
        s.stop()


def open_socket(port: int, send: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if send:
        sock.sendall(send)
    return sock


def read_to_eof(sock: socket.socket) -> bytes:
    """What the server sends before closing (socket.timeout if it never closes)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


async def test_silent_and_half_sent_requests_get_408_and_are_closed(server: HeraldServer) -> None:
    ws = await connect(server.ws)  # a real client connected before: it must survive
    socks = [open_socket(server.port) for _ in range(3)]
    socks += [open_socket(server.port, PARTIAL_UPGRADE) for _ in range(3)]
    socks.append(open_socket(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"))
    try:
        for sock in socks:
            assert read_to_eof(sock).startswith(b"HTTP/1.1 408 ")
        await ws.send('{"op":"ping","id":1}')
        assert (await recv_json(ws))["id"] == 1
        assert httpx.get(server.http + "/healthz", timeout=5).status_code == 200
    finally:
        for sock in socks:
            sock.close()
        await ws.close()


async def test_handshaking_sockets_count_towards_max_connections(server: HeraldServer) -> None:
    socks = [open_socket(server.port) for _ in range(MAX_CONNECTIONS + HTTP_HEADROOM)]
    try:
        # The cap counts silent sockets: the next one is refused at once...
        with contextlib.closing(open_socket(server.port)) as extra:
            assert read_to_eof(extra).startswith(b"HTTP/1.1 503 ")
        with pytest.raises(InvalidStatus):
            await connect(server.ws)
        # ...until the deadline closes them, and real clients get in again.
        for sock in socks:
            read_to_eof(sock)
        ws = await connect(server.ws)
        await ws.close()
    finally:
        for sock in socks:
            sock.close()


def _get(sock: socket.socket) -> bytes:
    """One keep-alive GET /healthz on `sock`: the reply head and body."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return head


async def test_each_request_of_a_keep_alive_connection_gets_its_own_deadline(
    server: HeraldServer,
) -> None:
    # Requests one after another for longer than the deadline: none of them is late,
    # so the connection stays open (the deadline is per request head, not per socket).
    with contextlib.closing(open_socket(server.port)) as sock:
        deadline = time.monotonic() + 3 * 500 * MS
        while time.monotonic() < deadline:
            assert _get(sock).startswith(b"HTTP/1.1 200 ")
            await asyncio.sleep(50 * MS)
        # An idle keep-alive connection has no head deadline; a head begun and not
        # finished does, counted from when it began.
        await asyncio.sleep(700 * MS)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert read_to_eof(sock).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started >= 400 * MS

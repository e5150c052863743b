"""WebSocket clients for integration tests: the `websockets` library, and a raw
socket client that can stop reading (to play a slow or dead peer)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


async def connect(url: str, **kw: Any) -> ClientConnection:
    kw.setdefault("compression", None)
    kw.setdefault("open_timeout", 10)
    return await websockets.connect(url, **kw)


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    out: dict[str, Any] = json.loads(raw)
    return out


async def recv_op(ws: ClientConnection, op: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame with this op, skipping others."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await recv_json(ws, max(0.01, deadline - loop.time()))
        if frame.get("op") == op:
            return frame


async def subscribe(ws: ClientConnection, topic: str, **fields: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"op": "subscribe", "id": "s", "topic": topic, **fields}))
    reply = await recv_json(ws)
    assert reply["op"] == "subscribed", reply
    return reply


async def collect(ws: ClientConnection, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Messages from `msgs` frames until `n` arrived."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[dict[str, Any]] = []
    while len(got) < n:
        frame = await recv_json(ws, max(0.01, deadline - loop.time()))
        if frame["op"] == "msgs":
            got.extend(frame["msgs"])
    return got


async def assert_silent(ws: ClientConnection, seconds: float) -> None:
    try:
        frame = await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected no frame, got {frame!r}")


class RawClient:
    """A blocking-socket WebSocket client that reads only when told to."""

    def __init__(self, port: int, path: str = "/ws", rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during handshake")
            head += chunk
        self.status = int(head.split(b" ", 2)[1])
        self.buf = b""

    def send_json(self, obj: Any) -> None:
        self.sock.sendall(masked_frame(0x1, json.dumps(obj).encode()))

    def read_frames(self, timeout: float = 10.0) -> list[tuple[int, bytes]]:
        """Read until the peer closes (or `timeout`): every complete frame."""
        self.sock.settimeout(timeout)
        frames: list[tuple[int, bytes]] = []
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                self.buf += chunk
                frames += self._parse()
                if frames and frames[-1][0] == 0x8:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return frames

    def _parse(self) -> list[tuple[int, bytes]]:
        out, self.buf = parse_frames(self.buf)
        return out

    def close(self) -> None:
        self.sock.close()


def parse_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete server (unmasked) frames as (opcode, payload), and the rest of `buf`."""
    out = []
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        head = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, head = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, head = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < head + n:
            break
        out.append((buf[0] & 0x0F, buf[head : head + n]))
        buf = buf[head + n :]
    return out, buf


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked, as RFC 6455 requires of clients)."""
    mask = os.urandom(4)
    n = len(payload)
    head = (
        bytes((0x80 | opcode, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    )
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    for op, payload in frames:
        if op == 0x8 and len(payload) >= 2:
            return int(struct.unpack("!H", payload[:2])[0])
    return None


def client_frame(
    opcode: int, payload: bytes, fin: bool = True, mask: bool = True, key: bytes | None = None
) -> bytes:
    """One client frame, masked (with `key`, else a random one) unless `mask` is False."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((first, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mbit | 127, n)
    if not mask:
        return head + payload
    key = key or os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body

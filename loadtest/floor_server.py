"""The floor: the least a Python (uvloop) WebSocket broadcast server can do.

It accepts WebSocket connections with a real RFC 6455 handshake, answers the first
client frame (the `subscribe`) with one fixed `subscribed` frame, and on a trigger
writes one pre-framed bytes object with `transport.write` to every subscribed
socket. No JSON, no routing, no buffer checks, no stats: whatever Herald spends
beyond this per delivered frame is Herald's own overhead (loadtest/fanout_micro.py).

Control is a line protocol on a second port (one connection, blocking client):

    size N   -> build the broadcast frame, N bytes on the wire   -> "ok N"
    fire     -> write it to every subscribed socket              -> "ok <sockets>"
    count    -> "ok <sockets>"

Run: python -m loadtest.floor_server --port P --control-port C [--cpu 0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import re
from typing import Any

from loadtest.procs import raise_nofile

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = re.compile(rb"(?i)\r\nsec-websocket-key:[ \t]*([A-Za-z0-9+/=]+)")
_SUB = b'{"op":"subscribed","id":1,"sub":"0000000000000000","topic":"bench.t0"}'

# transport -> None, like Herald's `Group.members` (insertion-ordered, O(1) removal).
members: dict[Any, None] = {}


def server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


SUBSCRIBED = server_frame(0x1, _SUB)


def msgs_frame(total: int) -> bytes:
    """A `msgs` text frame carrying one message, exactly `total` bytes long."""
    prefix = b'{"op":"msgs","sub":"0000000000000000","msgs":[{"topic":"bench.t0","data":"'
    suffix = b'"}]}'
    for head in (2, 4, 10):
        pad = total - head - len(prefix) - len(suffix)
        frame = server_frame(0x1, prefix + b"x" * max(pad, 0) + suffix)
        if len(frame) == total:
            return frame
    raise ValueError(f"cannot build a frame of {total} bytes")


class FloorWS(asyncio.Protocol):
    __slots__ = ("buf", "state", "t")

    def __init__(self) -> None:
        self.t: Any = None
        self.buf = b""
        self.state = 0  # 0 handshake, 1 open, 2 subscribed

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        if self.state == 0:
            data = self.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            self.buf = b""
            m = _KEY.search(data, 0, end + 2)
            if m is None or not data.startswith(b"GET "):
                self.t.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                self.t.close()
                return
            accept = base64.b64encode(hashlib.sha1(m.group(1) + _GUID).digest())
            self.t.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.state = 1
            data = data[end + 4 :]
            if not data:
                return
        # Client frames: the subscribe (any text frame), pongs, a close. Just the opcode.
        op = data[0] & 0x0F
        if op == 0x8:
            members.pop(self.t, None)
            self.t.write(server_frame(0x8, (1000).to_bytes(2, "big")))
            self.t.close()
        elif op == 0x1 and self.state == 1:
            self.state = 2
            members[self.t] = None
            self.t.write(SUBSCRIBED)

    def connection_lost(self, exc: Exception | None) -> None:
        members.pop(self.t, None)


class Control(asyncio.Protocol):
    def __init__(self) -> None:
        self.t: Any = None
        self.buf = b""
        self.frame = msgs_frame(200)

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, _, self.buf = self.buf.partition(b"\n")
            parts = line.split()
            if not parts:
                continue
            if parts[0] == b"fire":
                frame = self.frame
                for t in members:
                    t.write(frame)
                self.t.write(b"ok %d\n" % len(members))
            elif parts[0] == b"size":
                self.frame = msgs_frame(int(parts[1]))
                self.t.write(b"ok %d\n" % len(self.frame))
            elif parts[0] == b"count":
                self.t.write(b"ok %d\n" % len(members))
            else:
                self.t.write(b"error\n")


async def serve(host: str, port: int, control_port: int) -> None:
    loop = asyncio.get_running_loop()
    ws = await loop.create_server(FloorWS, host, port, backlog=4096)
    ctl = await loop.create_server(Control, host, control_port)
    async with ws, ctl:
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Minimal uvloop WebSocket broadcast server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    args = p.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port, args.control_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

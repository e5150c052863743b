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

Fanout mode (`--fanout`, issue 14): the floor of topic fanout with HTTP ingest, on
Herald's own stack. uvicorn with httptools and uvloop serves one port, as Herald does:
`POST /v1/publish` goes through uvicorn's request cycle to a raw ASGI app (`publish_app`)
that reads the body, parses it with orjson, builds ONE `msgs` frame in Herald's wire
shape (`{"op":"msgs","sub":K,"msgs":[{"topic","id","ts","data"}]}`) and
`transport.write`s those bytes to every socket of the topic, then answers 202
`{"id":..}`. `GET /ws` upgrades through uvicorn's httptools protocol (what Herald's
`ws=` class gets too) to `TopicWS`: a raw RFC 6455 handshake, client frames unmasked,
the topic of a `subscribe` found by a byte search, one `subscribed` reply. No
validation, no auth, no batching, no buffer checks, no keep-alive, no stats.

    python -m loadtest.floor_server --fanout --port P [--cpu 0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import re
import secrets
import time
from typing import Any

import orjson

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


def handshake(t: Any, data: bytes) -> bytes | None:
    """Answer an upgrade request: 101, or 400 and close (then `t.is_closing()`).
    Returns what follows the request head, or None while the head is incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    m = _KEY.search(data, 0, end + 2)
    if m is None or not data.startswith(b"GET "):
        t.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        t.close()
        return b""
    accept = base64.b64encode(hashlib.sha1(m.group(1) + _GUID).digest())
    t.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return data[end + 4 :]


def upgrade(ws: Any, data: bytes) -> bytes | None:
    """A protocol's handshake state (`t`, `buf`, `state`): once the head is answered
    with 101, `state` 1 and the bytes after it; None while incomplete or refused."""
    rest = handshake(ws.t, data)
    if rest is None:
        ws.buf = data
        return None
    if ws.t.is_closing():
        return None
    ws.state = 1
    return rest


async def read_body(receive: Any) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


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
            self.buf = b""
            rest = upgrade(self, data)
            if not rest:
                return
            data = rest
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


# ---- fanout mode: topics, HTTP ingest (issue 14) ---------------------------------------

# topic -> (the `msgs` frame prefix of its subscription, its sockets).
topics: dict[str, tuple[bytes, dict[Any, None]]] = {}
_TOPIC = b'"topic"'
_next_id = 0
_ID_PREFIX = secrets.token_hex(5)


def _sub_key(topic: str) -> bytes:
    return hashlib.blake2b(topic.encode(), digest_size=8).hexdigest().encode()


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if mask == b"\0\0\0\0":
        return payload
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class TopicWS(asyncio.Protocol):
    """A uvicorn `ws=` class: one subscribed socket of the fanout floor."""

    __slots__ = ("buf", "state", "t", "topic")

    def __init__(
        self, config: Any = None, server_state: Any = None, app_state: Any = None, _loop: Any = None
    ) -> None:
        self.t: Any = None
        self.buf = b""
        self.state = 0  # 0 handshake, 1 open
        self.topic: str | None = None

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        data = self.buf + data if self.buf else data
        self.buf = b""
        if self.state == 0:
            # uvicorn hands over the request head it parsed, rebuilt as bytes.
            rest = upgrade(self, data)
            if rest is None:
                return
            data = rest
        pos, size = 0, len(data)
        while size - pos >= 6:  # client frames are masked: 2 + 4 bytes at least
            n = data[pos + 1] & 0x7F
            head = 2
            if n == 126:
                n, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                n, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            start = pos + head + 4
            if start + n > size:
                break
            op = data[pos] & 0x0F
            payload = _unmask(data[start : start + n], data[start - 4 : start])
            pos = start + n
            if op == 0x8:
                self._leave()
                self.t.write(server_frame(0x8, (1000).to_bytes(2, "big")))
                self.t.close()
                return
            if op == 0x1 and self.topic is None:
                self._subscribe(payload)
        if pos < size:
            self.buf = data[pos:]

    def _subscribe(self, payload: bytes) -> None:
        # The value after `"topic"` (whatever spacing the client's JSON has); no parse.
        i = payload.find(_TOPIC)
        if i < 0:
            return
        i = payload.index(b'"', i + len(_TOPIC)) + 1
        topic = payload[i : payload.index(b'"', i)].decode()
        key = _sub_key(topic)
        entry = topics.get(topic)
        if entry is None:
            prefix = b'{"op":"msgs","sub":"' + key + b'","msgs":['
            entry = topics[topic] = (prefix, {})
        entry[1][self.t] = None
        self.topic = topic
        self.t.write(
            server_frame(
                0x1,
                b'{"op":"subscribed","id":1,"sub":"%s","topic":"%s"}' % (key, topic.encode()),
            )
        )

    def _leave(self) -> None:
        if self.topic is not None:
            entry = topics.get(self.topic)
            if entry is not None:
                entry[1].pop(self.t, None)
            self.topic = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()


def _reply(status: int, body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"application/json"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


_NOT_FOUND = _reply(404, b'{"error":{"code":"not_found"}}')


async def publish_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`POST /v1/publish`: parse, frame once, write to the topic's sockets, 202."""
    global _next_id
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    if scope["path"] != "/v1/publish" or scope["method"] != "POST":
        start, end = _NOT_FOUND
    else:
        msg = orjson.loads(body)
        topic = msg["topic"]
        _next_id += 1
        msg_id = f"{_ID_PREFIX}{_next_id:x}"  # Herald's id shape, so frames are as long
        entry = topics.get(topic)
        if entry is not None and entry[1]:
            envelope = orjson.dumps(
                {
                    "topic": topic,
                    "id": msg_id,
                    "ts": time.time_ns() // 1_000_000,
                    "data": msg.get("data"),
                }
            )
            frame = server_frame(0x1, entry[0] + envelope + b"]}")
            for t in entry[1]:
                t.write(frame)
        start, end = _reply(202, b'{"id":"%s"}' % msg_id.encode())
    await send(start)
    await send(end)


def serve_fanout(host: str, port: int) -> None:
    """uvicorn on one port, as Herald: httptools for HTTP, `TopicWS` for upgrades."""
    import uvicorn

    config = uvicorn.Config(
        publish_app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws=TopicWS,
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )
    uvicorn.Server(config).run()


# ---- broadcast mode ------------------------------------------------------------------------


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
    p.add_argument("--control-port", type=int, default=None)
    p.add_argument("--fanout", action="store_true", help="topics and HTTP ingest, one port")
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    args = p.parse_args(argv)
    if not args.fanout and args.control_port is None:
        p.error("--control-port is required (unless --fanout)")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile()
    if args.fanout:
        serve_fanout(args.host, args.port)
        return 0
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port, args.control_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

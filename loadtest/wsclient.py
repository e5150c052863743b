"""A lean WebSocket load generator: many sockets, one process, almost no work per frame.

Each connection is a raw `asyncio.Protocol` (uvloop): it writes the HTTP upgrade,
checks for `101`, sends one `subscribe` frame and then only walks frame headers,
counting `msgs` frames, the messages inside them (`{"topic":` occurrences, a C-level
`bytes.count`) and their bytes. No `websockets`, no JSON decoding, no task per socket,
so the generator stays far cheaper per frame than the server it measures.

Driven over stdin/stdout with one JSON object per line (see `fanout_micro`):

    {"cmd": "connect", "n": 5000}   -> {"ok": true, "open": 5000, "failed": 0, "s": 3.1}
    {"cmd": "stats"}                -> {"frames": .., "msgs": .., "bytes": .., ...}
    {"cmd": "reset"}                -> zero the frame counters
    {"cmd": "close"}                -> close every socket
    {"cmd": "quit"}

Run: python -m loadtest.wsclient --port 8080 [--host 127.0.0.1] [--sources 127.0.0.2,...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import socket
import sys
import time
from typing import Any

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_SUBSCRIBED = b'{"op":"subscribed"'
_MSGS = b'{"op":"msgs"'
_TOPIC = b'{"topic":'
_PONG_EMPTY = bytes((0x8A, 0x80, 0, 0, 0, 0))  # masked with a zero key
_CLOSE = bytes((0x88, 0x82, 0, 0, 0, 0)) + (1000).to_bytes(2, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked client frame; the all-zero mask key leaves the payload as is."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class Counters:
    __slots__ = ("bytes", "closed", "frames", "msgs", "other", "pings", "samples", "subscribed")

    def __init__(self) -> None:
        self.frames = 0
        self.msgs = 0
        self.bytes = 0
        self.other = 0
        self.pings = 0
        self.subscribed = 0
        self.closed = 0
        self.samples: list[str] = []

    def reset(self) -> None:
        self.frames = self.msgs = self.bytes = self.other = self.pings = 0


C = Counters()


class Conn(asyncio.Protocol):
    """One client socket: handshake, subscribe, then count frames."""

    __slots__ = ("buf", "state", "t", "waiter")

    def __init__(self, waiter: asyncio.Future[bool]) -> None:
        self.t: Any = None
        self.buf = b""
        self.state = 0  # 0 handshake, 1 waiting for "subscribed", 2 live, 3 closed
        self.waiter: asyncio.Future[bool] | None = waiter

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        transport.write(REQUEST)

    def _done(self, ok: bool) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(ok)

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if self.state == 0:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                if len(C.samples) < 5:
                    C.samples.append(data[:200].decode("latin-1"))
                self.state = 3
                self.t.close()
                self._done(False)
                return
            self.state = 1
            self.t.write(SUBSCRIBE)
            data = data[end + 4 :]
        size = len(data)
        pos = 0
        c = C
        while size - pos >= 2:
            n = data[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            start = pos + head
            end = start + n
            if end > size:
                break
            op = data[pos] & 0x0F
            if op == 1:
                if data.startswith(_MSGS, start):
                    c.frames += 1
                    c.bytes += end - pos
                    c.msgs += data.count(_TOPIC, start, end)
                elif self.state == 1 and data.startswith(_SUBSCRIBED, start):
                    self.state = 2
                    c.subscribed += 1
                    self._done(True)
                else:
                    c.other += 1
                    if len(c.samples) < 5:
                        c.samples.append(data[start : min(end, start + 200)].decode())
            elif op == 9:
                c.pings += 1
                self.t.write(client_frame(0xA, data[start:end]) if n else _PONG_EMPTY)
            elif op == 8:
                if self.state != 3:
                    self.state = 3
                    self.t.write(_CLOSE)
                    self.t.close()
                    self._done(False)
                return
            pos = end
        if pos < size:
            self.buf = data[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        C.closed += 1
        if self.state < 2 and len(C.samples) < 5:
            C.samples.append(f"lost in state {self.state}: {exc!r}")
        if self.state == 2:
            C.subscribed -= 1
        self.state = 3
        self._done(False)


REQUEST = b""
SUBSCRIBE = b""


class Client:
    def __init__(self, host: str, port: int, sources: list[str], concurrency: int) -> None:
        self.host = host
        self.port = port
        self.sources = sources or [""]
        self.concurrency = concurrency
        self.conns: list[Conn] = []
        self.failed = 0
        self.errors: dict[str, int] = {}
        self._next_source = 0

    async def _open_one(self, sem: asyncio.Semaphore, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        async with sem:
            src = self.sources[self._next_source % len(self.sources)]
            self._next_source += 1
            waiter: asyncio.Future[bool] = loop.create_future()
            conn: Conn | None = None
            try:
                async with asyncio.timeout(timeout):
                    sock = None
                    if src:
                        # Bind the address but let connect() pick the port, so that ports
                        # are shared across destinations (bind(0) alone would give each
                        # source one global range and slow down as it fills).
                        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                        sock.bind((src, 0))
                        sock.setblocking(False)
                        try:
                            await loop.sock_connect(sock, (self.host, self.port))
                        except BaseException:
                            sock.close()
                            raise
                        _, proto = await loop.create_connection(lambda: Conn(waiter), sock=sock)
                    else:
                        _, proto = await loop.create_connection(
                            lambda: Conn(waiter), self.host, self.port
                        )
                    conn = proto
                    ok = await waiter
            except (OSError, TimeoutError) as exc:
                ok = False
                name = type(exc).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
            if ok and conn is not None:
                self.conns.append(conn)
            else:
                self.failed += 1
                if conn is not None and conn.t is not None:
                    conn.t.abort()

    async def connect(self, n: int, timeout: float) -> dict[str, Any]:
        t0 = time.monotonic()
        sem = asyncio.Semaphore(self.concurrency)
        before = len(self.conns)
        failed_before = self.failed
        await asyncio.gather(*(self._open_one(sem, timeout) for _ in range(n)))
        return {
            "ok": self.failed == failed_before,
            "open": len(self.conns) - before,
            "total_open": C.subscribed,
            "failed": self.failed - failed_before,
            "errors": self.errors,
            "samples": C.samples,
            "s": round(time.monotonic() - t0, 3),
        }

    def close(self) -> None:
        for conn in self.conns:
            if conn.state != 3 and conn.t is not None:
                conn.t.write(_CLOSE)
                conn.t.close()
        self.conns.clear()


def stats() -> dict[str, Any]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "frames": C.frames,
        "msgs": C.msgs,
        "bytes": C.bytes,
        "other": C.other,
        "pings": C.pings,
        "subscribed": C.subscribed,
        "closed": C.closed,
        "samples": C.samples,
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
    }


async def serve_stdin(client: Client) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": True, "pid": os.getpid()})
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        op = cmd.get("cmd")
        if op == "connect":
            reply(await client.connect(int(cmd["n"]), float(cmd.get("timeout_each", 30))))
        elif op == "stats":
            reply(stats())
        elif op == "reset":
            C.reset()
            reply({"ok": True})
        elif op == "close":
            client.close()
            await asyncio.sleep(0.2)
            reply({"ok": True})
        elif op == "quit":
            client.close()
            reply({"ok": True})
            return
        else:
            reply({"error": f"unknown cmd {op!r}"})


def main(argv: list[str] | None = None) -> int:
    global REQUEST, SUBSCRIBE
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/ws")
    p.add_argument("--topic", default="bench.t")
    p.add_argument("--sources", default="", help="comma-separated local addresses to bind")
    p.add_argument("--concurrency", type=int, default=256, help="handshakes in flight")
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    args = p.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, hard), hard))
    key = base64.b64encode(os.urandom(16)).decode()
    REQUEST = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    SUBSCRIBE = client_frame(
        0x1, json.dumps({"op": "subscribe", "id": 1, "topic": args.topic}).encode()
    )
    sources = [s for s in args.sources.split(",") if s]
    client = Client(args.host, args.port, sources, args.concurrency)
    try:
        import uvloop

        uvloop.run(serve_stdin(client))
    except ImportError:  # pragma: no cover
        asyncio.run(serve_stdin(client))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

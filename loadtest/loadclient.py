"""The load client: many raw WebSocket subscribers in one process, almost no work per frame.

The one WebSocket load generator of the harness (the micro-benchmark, the peer
benchmark and the cross-pod run all use it). Each connection is a raw `asyncio.Protocol`
(uvloop): it writes the HTTP upgrade, checks for `101`, subscribes in its peer's dialect
and then only walks frame headers. No `websockets`, no JSON decoding, no task per
socket, so the generator stays far cheaper per frame than the server it measures.

Dialects (`--kind`):

- `herald`  : `{"op":"subscribe","topic":T[,"batch_ms":B]}`, waits for `subscribed`
- `simple`  : the Python peers in `loadtest/peers/` (same frame as herald)
- `floor`   : `loadtest/floor_server.py` (any text frame subscribes)
- `socketio`: Engine.IO 4 / Socket.IO 5 over WebSocket (`40`, `42["subscribe",T]`),
              answers Engine.IO pings (`2` -> `3`)
- `nats`    : NATS protocol over WebSocket (`CONNECT {...}`, `SUB T 1`, `PING` -> `PONG`)

Messages are counted by a marker (`--mark`): `t0` counts `"t0":` (every message of the
paced publisher carries `"t0":<time.monotonic_ns()>`; CLOCK_MONOTONIC is system-wide on
Linux, so one connection in `probe_every` also records publish -> receive latency),
`topic` counts `{"topic":` (Herald's and the floor's message objects, whatever the data).
A data frame with at least one marker counts as one frame.

Driven over stdin/stdout with one JSON object per line (`LoadClient` is the other end):

    {"cmd": "connect", "n": 5000, "topics": 100, "offset": 0, "concurrency": 256}
        -> {"open": 5000, "failed": 0, "errors": {}, "s": 3.1, ...}
        ("topic": T subscribes all n sockets to T instead of bench.t<i % topics>;
         "port": P connects them to P instead of --port)
    {"cmd": "stats"} / {"cmd": "reset"} / {"cmd": "latency"} / {"cmd": "close"} / {"cmd": "quit"}

    python -m loadtest.loadclient sub --kind herald --port P [--mark topic] [--sources ..]
    python -m loadtest.loadclient pub --kind herald --port P --topics 100 --rate 1000 --count 5000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
from typing import Any

from loadtest.procs import PY, raise_nofile, spawn, stop_pid

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
MARKS = {"t0": b'"t0":', "topic": b'{"topic":'}
PONG_EMPTY = bytes((0x8A, 0x80, 0, 0, 0, 0))  # masked with a zero key
CLOSE = bytes((0x88, 0x82, 0, 0, 0, 0)) + (1000).to_bytes(2, "big")
LAT_CAP = 500_000

PATHS = {
    "herald": "/ws",
    "simple": "/ws",
    "floor": "/ws",
    "socketio": "/socket.io/?EIO=4&transport=websocket",
    "nats": "/",
    "http": "/v1/publish",  # the publisher only: Herald's HTTP publish, pipelined
}


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


def upgrade_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def topic_name(i: int) -> str:
    return f"bench.t{i}"


_SIO_PONG = client_frame(0x1, b"3")
_NATS_PONG = client_frame(0x2, b"PONG\r\n")


def subscribe_frames(kind: str, topic: str, batch_ms: int | None) -> list[bytes]:
    """What the client sends once the WebSocket is open (before it is 'live')."""
    if kind in ("herald", "simple", "floor"):
        body: dict[str, Any] = {"op": "subscribe", "id": 1, "topic": topic}
        if batch_ms is not None:
            body["batch_ms"] = batch_ms
        return [client_frame(0x1, json.dumps(body, separators=(",", ":")).encode())]
    if kind == "socketio":
        return [
            client_frame(0x1, b"40"),
            client_frame(0x1, b'42["subscribe","%s"]' % topic.encode()),
        ]
    if kind == "nats":
        return [
            client_frame(
                0x2,
                b'CONNECT {"verbose":false,"pedantic":false,"protocol":1,"headers":false}\r\n'
                b"SUB %s 1\r\nPING\r\n" % topic.encode(),
            )
        ]
    raise ValueError(kind)


class Counters:
    __slots__ = ("bytes", "closed", "frames", "lat", "msgs", "other", "samples", "subscribed")

    def __init__(self) -> None:
        self.frames = self.msgs = self.bytes = self.other = 0
        self.subscribed = self.closed = 0
        self.lat: list[int] = []
        self.samples: list[str] = []

    def reset(self) -> None:
        self.frames = self.msgs = self.bytes = self.other = 0
        self.lat = []


C = Counters()
# Set once by main() for the whole process (module globals: one lookup per frame).
KIND = "herald"
MARK = MARKS["t0"]
REQUEST = b""
RCVBUF = 0


def _is_ready(kind: str, payload: bytes) -> bool:
    if kind in ("herald", "simple", "floor"):
        return payload.startswith(b'{"op":"subscribed"')
    if kind == "socketio":
        return payload.startswith(b'42["subscribed"')
    if kind == "nats":
        return b"PONG" in payload
    return False


class Conn(asyncio.Protocol):
    """One client socket: handshake, subscribe, then count frames."""

    __slots__ = ("buf", "probe", "state", "sub", "t", "waiter")

    def __init__(self, waiter: asyncio.Future[bool], sub: list[bytes], probe: bool) -> None:
        self.t: Any = None
        self.buf = b""
        self.state = 0  # 0 handshake, 1 subscribing, 2 live, 3 closed
        self.waiter: asyncio.Future[bool] | None = waiter
        self.sub = sub
        self.probe = probe

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
            if KIND != "socketio":  # socket.io: wait for the Engine.IO open packet
                for f in self.sub:
                    self.t.write(f)
            data = data[end + 4 :]
        size = len(data)
        pos = 0
        c = C
        mark = MARK
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
            if op == 1 or op == 2:
                m = data.count(mark, start, end)
                if m and self.state == 2:
                    c.frames += 1
                    c.bytes += end - pos
                    c.msgs += m
                    if self.probe:
                        self._latency(data, start, end)
                else:
                    self._control(data[start:end])
            elif op == 9:
                self.t.write(client_frame(0xA, data[start:end]) if n else PONG_EMPTY)
            elif op == 8:
                if self.state < 2 and len(C.samples) < 5:
                    C.samples.append(f"close {data[start:end]!r} in state {self.state}")
                if self.state != 3:
                    self.state = 3
                    self.t.write(CLOSE)
                    self.t.close()
                    self._done(False)
                return
            pos = end
        if pos < size:
            self.buf = data[pos:]

    @staticmethod
    def _latency(data: bytes, start: int, end: int) -> None:
        now = time.monotonic_ns()
        i = data.find(MARK, start, end)
        lat = C.lat
        while i >= 0 and len(lat) < LAT_CAP:
            j = i + len(MARK)
            k = j
            while 48 <= data[k] <= 57:
                k += 1
            if k > j:  # a `{"topic":` mark carries no timestamp
                lat.append(now - int(data[j:k]))
            i = data.find(MARK, k, end)

    def _control(self, payload: bytes) -> None:
        kind = KIND
        if kind == "socketio":
            if payload == b"2":
                self.t.write(_SIO_PONG)
                return
            if self.state == 1:
                # Engine.IO open -> namespace connect; its ack -> subscribe (a packet for
                # a namespace not yet connected makes socket.io close the connection).
                if payload.startswith(b"0{"):
                    self.t.write(self.sub[0])
                    return
                if payload.startswith(b"40"):
                    self.t.write(self.sub[1])
                    return
        elif kind == "nats" and b"PING\r\n" in payload:
            self.t.write(_NATS_PONG)
            if self.state != 1:
                return
        if self.state == 1 and _is_ready(kind, payload):
            self.state = 2
            C.subscribed += 1
            self._done(True)
            return
        if self.state == 2:
            C.other += 1
        if len(C.samples) < 5 and not (kind == "nats" and payload.startswith(b"INFO")):
            C.samples.append(payload[:200].decode("latin-1"))

    def connection_lost(self, exc: Exception | None) -> None:
        C.closed += 1
        if self.state < 2 and len(C.samples) < 5:
            C.samples.append(f"lost in state {self.state}: {exc!r}")
        if self.state == 2:
            C.subscribed -= 1
        self.state = 3
        self._done(False)


class Client:
    """The sockets of one load-client process."""

    def __init__(self, host: str, port: int, sources: list[str], batch_ms: int | None) -> None:
        self.host = host
        self.port = port
        self.sources = sources or [""]
        self.batch_ms = batch_ms
        self.conns: list[Conn] = []
        self.failed = 0
        self.errors: dict[str, int] = {}
        self._next_source = 0

    def _socket(self, src: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if RCVBUF:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if src:
            # Bind the address but let connect() pick the port, so that ports are shared
            # across destinations (bind(0) alone would give each source one global range
            # and slow down as it fills).
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((src, 0))
        sock.setblocking(False)
        return sock

    async def _open_one(
        self, sem: asyncio.Semaphore, timeout: float, port: int, topic: str, probe: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        sub = subscribe_frames(KIND, topic, self.batch_ms)
        async with sem:
            src = self.sources[self._next_source % len(self.sources)]
            self._next_source += 1
            waiter: asyncio.Future[bool] = loop.create_future()
            conn: Conn | None = None
            try:
                async with asyncio.timeout(timeout):
                    sock = self._socket(src)
                    try:
                        await loop.sock_connect(sock, (self.host, port))
                    except BaseException:
                        sock.close()
                        raise
                    _, conn = await loop.create_connection(
                        lambda: Conn(waiter, sub, probe), sock=sock
                    )
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

    async def connect(
        self,
        n: int,
        topics: int,
        offset: int,
        probe_every: int,
        concurrency: int,
        timeout: float,
        max_seconds: float,
        topic: str | None = None,
        port: int | None = None,
    ) -> dict[str, Any]:
        t0 = time.monotonic()
        to = port or self.port
        before = len(self.conns)
        failed_before = self.failed
        # The first subscriber of each topic alone (encode/broadcaster 0.3.1 loses
        # concurrent first subscribers of a channel), then the rest concurrently.
        first = min(n, 1 if topic else topics)
        seq = asyncio.Semaphore(1)
        sem = asyncio.Semaphore(concurrency)

        def spec(i: int) -> tuple[str, bool]:
            idx = offset + i
            name = topic or topic_name(idx % topics)
            return name, probe_every > 0 and idx % probe_every == 0

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_seconds):
                await asyncio.gather(
                    *(self._open_one(seq, timeout, to, *spec(i)) for i in range(first))
                )
                if first:
                    await asyncio.sleep(0.2)
                await asyncio.gather(
                    *(self._open_one(sem, timeout, to, *spec(i)) for i in range(first, n))
                )
        return {
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
                conn.t.write(CLOSE)
                conn.t.close()
        self.conns.clear()


def stats() -> dict[str, Any]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "frames": C.frames,
        "msgs": C.msgs,
        "bytes": C.bytes,
        "other": C.other,
        "subscribed": C.subscribed,
        "closed": C.closed,
        "samples": C.samples,
        "nlat": len(C.lat),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
    }


def latency() -> dict[str, Any]:
    lat = sorted(C.lat)
    if not lat:
        return {"n": 0}

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6

    return {"n": len(lat), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": lat[-1] / 1e6}


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
            client.close()
            return
        cmd = json.loads(line)
        op = cmd.get("cmd")
        if op == "connect":
            reply(
                await client.connect(
                    int(cmd["n"]),
                    int(cmd.get("topics", 1)),
                    int(cmd.get("offset", 0)),
                    int(cmd.get("probe_every", 0)),
                    int(cmd.get("concurrency", 256)),
                    float(cmd.get("timeout_each", 60)),
                    float(cmd.get("max_seconds", 120)),
                    cmd.get("topic"),
                    cmd.get("port"),
                )
            )
        elif op == "stats":
            reply(stats())
        elif op == "latency":
            reply(latency())
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


# ---- the driver's end -------------------------------------------------------------------


class LoadClient:
    """One `python -m loadtest.loadclient sub` process, driven over JSON lines."""

    def __init__(
        self,
        port: int,
        kind: str = "herald",
        cpu: int | None = None,
        sources: list[str] | None = None,
        batch_ms: int | None = None,
        mark: str | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        args = [PY, "-m", "loadtest.loadclient", "sub", "--kind", kind, "--port", str(port)]
        if sources:
            args += ["--sources", ",".join(sources)]
        if batch_ms is not None:
            args += ["--batch-ms", str(batch_ms)]
        if mark is not None:
            args += ["--mark", mark]
        if rcvbuf is not None:
            args += ["--rcvbuf", str(rcvbuf)]
        self.proc = spawn(args, cpu, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = int(self._read(20)["pid"])

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout.fileno()], [], [], timeout)
        if not ready:
            raise TimeoutError("load client did not answer")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load client exited ({self.proc.poll()})")
        out: dict[str, Any] = json.loads(line)
        return out

    def call(self, cmd: str, timeout: float = 30.0, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def connect(self, n: int, timeout: float = 30.0, **kw: Any) -> dict[str, Any]:
        """Open `n` more sockets; raises when any failed (callers wanting a partial
        result call `call("connect", ...)` themselves)."""
        res = self.call("connect", timeout=timeout + 30, n=n, timeout_each=timeout, **kw)
        if res["failed"]:
            raise RuntimeError(f"{res['failed']} of {n} connections failed: {res}")
        return res

    def wait_msgs(self, want: int, timeout: float = 10.0) -> dict[str, Any]:
        """Poll `stats` until `want` messages were counted or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.call("stats")
            if st["msgs"] >= want or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call("quit", timeout=10)
        stop_pid(self.proc)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def main(argv: list[str] | None = None) -> int:
    global KIND, REQUEST, MARK, RCVBUF
    p = argparse.ArgumentParser(description="Load client: subscribers (sub) or publisher (pub)")
    p.add_argument("mode", choices=["sub", "pub"])
    p.add_argument("--kind", required=True, choices=sorted(PATHS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default=None)
    p.add_argument("--sources", default="", help="comma-separated local addresses to bind")
    p.add_argument("--batch-ms", type=int, default=None)
    p.add_argument("--mark", choices=sorted(MARKS), default=None, help="t0 (floor: topic)")
    p.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF of each socket")
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    # publisher
    p.add_argument("--topics", type=int, default=1)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--pad", type=int, default=64)
    p.add_argument("--max-seconds", type=float, default=120.0)
    args = p.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile()
    path = args.path or PATHS[args.kind]
    if args.mode == "pub":
        from loadtest.publisher import Publisher

        pub = Publisher(args.kind, args.host, args.port, path)
        try:
            time.sleep(0.1)
            out = pub.run(args.topics, args.rate, args.count, args.pad, args.max_seconds)
            time.sleep(0.2)
            out["reply_bytes"] = pub.received
        finally:
            pub.close()
        print(json.dumps(out), flush=True)
        return 0
    KIND = args.kind
    # The floor's fixed frame carries no timestamp.
    MARK = MARKS[args.mark or ("topic" if args.kind == "floor" else "t0")]
    RCVBUF = args.rcvbuf
    REQUEST = upgrade_request(args.host, args.port, path)
    sources = [s for s in args.sources.split(",") if s]
    client = Client(args.host, args.port, sources, args.batch_ms)
    import uvloop

    uvloop.run(serve_stdin(client))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

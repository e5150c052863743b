"""The paced publisher of the load client (`python -m loadtest.loadclient pub`).

One blocking connection that publishes `{"t0":..,"seq":..,"pad":..}` messages at a fixed
rate in each peer's dialect (Herald and the simple peers, socket.io, plain NATS), or as
Herald's `POST /v1/publish` (kind `http`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from loadtest.loadclient import CLOSE, client_frame, topic_name, upgrade_request

_SIO_PONG = client_frame(0x1, b"3")


class Publisher:
    """One blocking connection that publishes `{"t0":..,"seq":..,"pad":..}` messages."""

    def __init__(self, kind: str, host: str, port: int, path: str) -> None:
        self.kind = kind
        self.sock = socket.create_connection((host, port), 10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(10)
        self.received = 0
        self._buf = b""
        self.path = path
        if kind == "http":  # POST /v1/publish on one keep-alive connection, pipelined
            pass
        elif kind == "nats":  # plain NATS client port
            self._read_until(b"\r\n")
            self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
        else:
            self.sock.sendall(upgrade_request(host, port, path))
            head = self._read_until(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"publisher handshake: {head[:200]!r}")
            if kind == "socketio":
                self._read_until(b"}")  # Engine.IO open packet
                self.sock.sendall(client_frame(0x1, b"40"))
                self._read_until(b"}")  # 40{"sid":..}
        self.sock.settimeout(None)
        self._stop = False
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _read_until(self, token: bytes) -> bytes:
        """Bytes up to and including `token`; what follows stays buffered."""
        buf = self._buf
        while token not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"publisher: connection closed ({buf[:200]!r})")
            buf += chunk
        i = buf.index(token) + len(token)
        self._buf = buf[i:]
        return buf[:i]

    def _drain(self) -> None:
        # Replies (`published`, socket.io pings) are read and dropped; socket.io pings
        # are answered so a long run is not cut off.
        with contextlib.suppress(OSError):
            while not self._stop:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return
                self.received += len(chunk)
                if self.kind == "socketio" and b"\x81\x012" in chunk:
                    self.sock.sendall(_SIO_PONG)

    def frame(self, topic: str, body: bytes) -> bytes:
        kind = self.kind
        if kind == "nats":
            return b"PUB %s %d\r\n%s\r\n" % (topic.encode(), len(body), body)
        if kind == "http":
            msg = b'{"topic":"%s","data":%s}' % (topic.encode(), body)
            return (
                b"POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (self.path.encode(), len(msg), msg)
            )
        if kind == "socketio":
            return client_frame(
                0x1, b'42["publish",{"topic":"%s","data":%s}]' % (topic.encode(), body)
            )
        return client_frame(
            0x1, b'{"op":"publish","id":1,"topic":"%s","data":%s}' % (topic.encode(), body)
        )

    def run(
        self, topics: int, rate: float, count: int, pad: int, max_seconds: float
    ) -> dict[str, Any]:
        padding = b"x" * pad
        names = [topic_name(i) for i in range(topics)]
        t0 = time.monotonic()
        late = 0
        sent = 0
        for i in range(count):
            target = t0 + i / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.005:
                late += 1
            body = b'{"t0":%d,"seq":%d,"pad":"%s"}' % (time.monotonic_ns(), i, padding)
            self.sock.sendall(self.frame(names[i % topics], body))
            sent += 1
            if time.monotonic() - t0 > max_seconds:
                break
        wall = time.monotonic() - t0
        return {"sent": sent, "wall_s": round(wall, 3), "late": late, "rate": sent / wall}

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            if self.kind not in ("nats", "http"):
                self.sock.sendall(CLOSE)
            self.sock.close()

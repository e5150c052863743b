"""A real local HTTP receiver for webhook tests (uvicorn in a thread, on a free port).

`script` decides each answer in order: an int status, "hang" (never answers within
the gateway's timeout); when it runs out, `default` is used. Every request is recorded
with its arrival time, headers and body.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from procs import free_port


@dataclass
class Call:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    script: list[int | str] = field(default_factory=list)
    default: int = 200
    calls: list[Call] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.calls.append(Call(time.monotonic(), headers, body))
        answer = self.script.pop(0) if self.script else self.default
        if answer == "hang":
            await asyncio.sleep(30)
            answer = 200
        await send({"type": "http.response.start", "status": int(answer), "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def start(self) -> Receiver:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self._server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(5)

    def wait_calls(self, n: int, timeout: float = 10.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < n:
            assert time.monotonic() < deadline, f"{len(self.calls)} of {n} calls in {timeout}s"
            time.sleep(0.01)
        return self.calls

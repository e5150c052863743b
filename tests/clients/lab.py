"""The servers behind the client scenarios, and a small control server through which the
JS scenarios (Node and Chromium) drive them: set up gateways, publish at a steady rate,
SIGTERM/SIGKILL a gateway, mint tokens, create queues.

Every process is a real `herald serve` or `redis-server`, stopped by its PID.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt

from procs import ROOT, HeraldServer, RedisServer, free_port

SECRET = "client-tests-secret-0123456789abcdef"
API_KEY = "client-tests-key"
HISTORY = [
    {"pattern": "small.>", "size": 5, "ttl": 600},
    {"pattern": ">", "size": 1000, "ttl": 600},
]
STATIC = {
    "/herald.js": ROOT / "clients" / "js" / "herald.js",
    "/scenarios.js": ROOT / "clients" / "js" / "test" / "scenarios.js",
    "/page.html": ROOT / "clients" / "js" / "test" / "page.html",
}


class Lab:
    """Gateways on demand; `basic` is shared, `drain` and `crash` are fresh per call."""

    def __init__(self) -> None:
        self.redis: RedisServer | None = None
        self.basic: HeraldServer | None = None
        self.servers: dict[str, HeraldServer] = {}
        self.groups: dict[str, list[HeraldServer]] = {}
        self.restarts: dict[str, threading.Thread] = {}
        self.lock = threading.Lock()

    # ---- set-ups ---------------------------------------------------------------------

    def _redis(self) -> RedisServer:
        with self.lock:
            if self.redis is None:
                self.redis = RedisServer().start()
            return self.redis

    def _start(self, env: dict[str, str]) -> HeraldServer:
        s = HeraldServer(env={"HERALD_HISTORY": json.dumps(HISTORY), **env}).start()
        self.servers[str(s.port)] = s
        return s

    def setup(self, kind: str) -> dict[str, Any]:
        """`basic`: the shared memory-engine gateway (auth on); `drain`: two redis-engine
        gateways on one Redis; `crash`: one redis-engine gateway."""
        if kind == "basic":
            with self.lock:
                if self.basic is None:
                    self.basic = self._start(
                        {"HERALD_JWT_SECRET": SECRET, "HERALD_API_KEYS": API_KEY}
                    )
            group = [self.basic]
        else:
            env = {
                "HERALD_ENGINE": "redis",
                "HERALD_REDIS_URL": self._redis().url,
                "HERALD_DRAIN_TIMEOUT": "2",
            }
            group = [self._start(env) for _ in range(2 if kind == "drain" else 1)]
        gid = uuid.uuid4().hex[:8]
        self.groups[gid] = group
        return {
            "id": gid,
            "ws": [s.ws for s in group],
            "http": [s.http for s in group],
            "apiKey": API_KEY if kind == "basic" else None,
        }

    def token(self, ttl: float, sub: str = "tester") -> str:
        claims = {
            "sub": sub,
            "exp": int(time.time() + ttl),
            "subscribe": [">"],
            "publish": [">"],
            "admin": True,
        }
        return jwt.encode(claims, SECRET, algorithm="HS256")

    # ---- actions ---------------------------------------------------------------------

    def publish_steady(
        self, gid: str, topic: str, n: int, interval_ms: float, sigterm_at: int
    ) -> dict[str, Any]:
        """Publish 0..n-1 to the last gateway of the group; SIGTERM the first at `sigterm_at`."""
        group = self.groups[gid]
        target = group[-1]
        with httpx.Client(base_url=target.http, timeout=10) as http:
            for i in range(n):
                r = http.post("/v1/publish", json={"topic": topic, "data": i})
                r.raise_for_status()
                if i == sigterm_at and group[0].proc is not None:
                    group[0].proc.send_signal(signal.SIGTERM)
                time.sleep(interval_ms / 1000)
        return {"published": n}

    def kill_restart(self, gid: str, delay_s: float) -> dict[str, Any]:
        """SIGKILL the group's gateway now; start it again on its port after `delay_s`."""
        server = self.groups[gid][0]
        server.kill()

        def later() -> None:
            time.sleep(delay_s)
            server.start()

        t = threading.Thread(target=later, daemon=True)
        t.start()
        self.restarts[gid] = t
        return {"killed": True}

    def wait_restarted(self, gid: str) -> dict[str, Any]:
        self.restarts[gid].join(30)
        return {"restarted": True}

    def freeze(self, gid: str, frozen: bool) -> dict[str, Any]:
        """SIGSTOP (a silent peer: the socket stays open, nothing answers) or SIGCONT."""
        proc = self.groups[gid][0].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)
        return {"frozen": frozen}

    def queue(self, name: str, bodies: list[Any]) -> dict[str, Any]:
        assert self.basic is not None
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=self.basic.http, headers=headers, timeout=10) as http:
            http.put(f"/v1/queues/{name}", json={"visibility_timeout": 30}).raise_for_status()
            for body in bodies:
                http.post(f"/v1/queues/{name}/messages", json={"body": body}).raise_for_status()
        return {"created": name}

    def queue_stats(self, name: str) -> dict[str, Any]:
        assert self.basic is not None
        headers = {"Authorization": f"Bearer {API_KEY}"}
        r = httpx.get(f"{self.basic.http}/v1/queues/{name}", headers=headers, timeout=10)
        r.raise_for_status()
        stats: dict[str, Any] = r.json()
        return stats

    def call(self, action: str, args: dict[str, Any]) -> Any:
        if action == "setup":
            return self.setup(args["kind"])
        if action == "token":
            return {"token": self.token(float(args.get("ttl", 60)))}
        if action == "publish_steady":
            return self.publish_steady(
                args["id"], args["topic"], args["n"], args["interval_ms"], args["sigterm_at"]
            )
        if action == "kill_restart":
            return self.kill_restart(args["id"], float(args["delay_s"]))
        if action == "wait_restarted":
            return self.wait_restarted(args["id"])
        if action == "freeze":
            return self.freeze(args["id"], bool(args["frozen"]))
        if action == "queue":
            return self.queue(args["name"], args["bodies"])
        if action == "queue_stats":
            return self.queue_stats(args["name"])
        raise KeyError(action)

    def stop(self) -> None:
        for group in self.groups.values():
            for s in group:
                if s.proc is not None and s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGCONT)  # a frozen one cannot stop
        for t in self.restarts.values():
            t.join(30)
        for s in self.servers.values():
            s.stop()
        if self.redis is not None:
            self.redis.stop()


class Control:
    """HTTP on a free port: POST /ctl/<action> (JSON) and the scenario files, so that a
    page served from here reaches both without CORS."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.port = free_port()
        lab_ = lab

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = STATIC.get(self.path.split("?")[0])
                if path is None:
                    self._send(404, b"not found", "text/plain")
                    return
                ctype = "text/html" if path.suffix == ".html" else "text/javascript"
                self._send(200, Path(path).read_bytes(), ctype)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                args = json.loads(self.rfile.read(length) or b"{}")
                try:
                    out = lab_.call(self.path.removeprefix("/ctl/"), args)
                    self._send(200, json.dumps(out).encode(), "application/json")
                except Exception as exc:
                    self._send(500, json.dumps({"error": repr(exc)}).encode(), "application/json")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Control:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

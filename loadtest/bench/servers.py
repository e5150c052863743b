"""The systems under test, each started on loopback and pinned to the server core."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from loadtest.fanout_micro import Floor, Server
from loadtest.procs import (
    PY,
    ROOT,
    RedisServer,
    bench_herald,
    cpu_seconds,
    free_port,
    rss_kib,
    spawn,
    wait_port,
)

SERVER_CPU = 0
CLIENT_CPU = 1
NODE_DIR = ROOT / "loadtest" / "peers" / "node"
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
WORKERS = 3  # herald serve --workers for the multi-process connection-scale test
FLOOR_FRAME_BYTES = 0  # set from Herald's measured frame size so both write the same bytes


class Srv(Server):
    """A system under test: a server process and the load client's dialect for it."""

    label = ""
    kind = "simple"  # the load client's dialect (loadtest/loadclient.py)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _start(self, args: list[str], env: dict[str, str] | None = None, **kw: Any) -> None:
        """Start the server pinned to the server core, then wait for `self.port`."""
        self.proc = spawn(args, SERVER_CPU, env, stdout=subprocess.DEVNULL, **kw)
        wait_port(self.port, 20.0, self.proc)


class HeraldSrv(Srv):
    kind = "herald"

    def __init__(
        self,
        engine: str,
        redis_url: str | None,
        data_dir: str,
        workers: int = 1,
        checkout: Path = ROOT,
    ) -> None:
        self.workers = workers
        self.name = f"herald-{engine}" + (f"-{workers}w" if workers > 1 else "")
        self.label = f"Herald ({engine}" + (f", {workers} workers)" if workers > 1 else ")")
        env = {"HERALD_ENGINE": engine}
        if redis_url:
            env["HERALD_REDIS_URL"] = redis_url
        if workers > 1:
            env["HERALD_WORKERS"] = str(workers)
        # Workers get every core (the driver itself is pinned to the client core).
        cpu = SERVER_CPU if workers == 1 else set(range(os.cpu_count() or 1))
        self.server = bench_herald(cpu, Path(data_dir), env=env, cwd=checkout)
        assert self.server.proc is not None
        self.proc, self.port = self.server.proc, self.server.port

    def _pids(self) -> list[int]:
        if self.workers == 1:
            return [self.pid]
        try:
            kids = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            kids = []
        return [self.pid, *(int(k) for k in kids)]

    def rss(self) -> int:
        return sum(rss_kib(p) for p in self._pids())

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self._pids())


class FloorSrv(Srv):
    name = "floor"
    label = "raw floor (pre-framed transport.write)"
    kind = "floor"

    def __init__(self) -> None:
        self.f = Floor(SERVER_CPU)
        self.proc = self.f.proc
        self.port = self.f.port
        if FLOOR_FRAME_BYTES:
            self.f.set_size(FLOOR_FRAME_BYTES)

    def stop(self) -> None:
        self.f.stop()


class FanoutFloorSrv(Srv):
    """`loadtest/floor_server.py --fanout`: topics and `POST /v1/publish` on one port."""

    name = "floor"
    label = "fanout floor (uvicorn+httptools publish, raw WS, one frame per publish)"
    kind = "herald"  # the same subscribe command and `msgs` frames as Herald

    def __init__(self) -> None:
        self.port = free_port()
        self._start([PY, "-m", "loadtest.floor_server", "--fanout", "--port", str(self.port)])


class PySrv(Srv):
    def __init__(
        self, name: str, label: str, module: str, kind: str, redis_url: str | None
    ) -> None:
        self.name, self.label, self.kind = name, label, kind
        self.port = free_port()
        env = dict(os.environ)
        if redis_url:
            env["BENCH_REDIS_URL"] = redis_url
        self._start([PY, "-m", module, "--port", str(self.port)], env)


class NodeSrv(Srv):
    name = "node-socketio"
    label = "Node socket.io + redis-adapter"
    kind = "socketio"

    def __init__(self, redis_url: str) -> None:
        if not (NODE_DIR / "node_modules").is_dir():
            raise RuntimeError(
                "loadtest/peers/node/node_modules missing: run `npm ci` in loadtest/peers/node"
            )
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node not installed")
        self.port = free_port()
        self._start([node, str(NODE_DIR / "socketio_server.js"), str(self.port), redis_url])


class NatsSrv(Srv):
    name = "nats"
    label = "NATS server (websocket)"
    kind = "nats"

    def __init__(self, tmp: str) -> None:
        if not Path(NATS).exists():
            raise RuntimeError("nats-server not installed")
        self.port = free_port()  # websocket
        self.client_port = free_port()
        conf = Path(tmp) / "nats.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.client_port}\n"
            'ping_interval: "1h"\nwrite_deadline: "10s"\nmax_connections: 200000\n'
            f"websocket {{\n  host: 127.0.0.1\n  port: {self.port}\n  no_tls: true\n"
            "  compression: false\n}\n"
        )
        self._start([NATS, "-c", str(conf)], stderr=subprocess.DEVNULL)
        wait_port(self.client_port, 20.0, self.proc)


def start_redis() -> RedisServer:
    """The peers' shared Redis, pinned with the servers."""
    args = ("--appendonly", "no", "--protected-mode", "no", "--maxclients", "20000")
    return RedisServer(args=args, cpu=SERVER_CPU).start()

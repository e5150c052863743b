"""The systems under test, each started on loopback and pinned to the server core."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from loadtest.fanout_micro import Floor
from loadtest.procs import (
    PY,
    ROOT,
    RedisServer,
    bench_herald,
    cpu_seconds,
    free_port,
    rss_kib,
    spawn,
    stop_pid,
    wait_port,
)

SERVER_CPU = 0
CLIENT_CPU = 1
NODE_DIR = ROOT / "loadtest" / "peers" / "node"
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
WORKERS = 3  # herald serve --workers for the multi-process connection-scale test
FLOOR_FRAME_BYTES = 0  # set from Herald's measured frame size so both write the same bytes


class Srv:
    name = ""
    label = ""
    kind = "simple"  # the load client's dialect (loadtest/loadclient.py)
    uses_redis = False
    proc: subprocess.Popen[bytes]
    port: int
    extra_pids: list[int]

    def __init__(self) -> None:
        self.extra_pids = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_kib(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_pid(self.proc)


class HeraldSrv(Srv):
    kind = "herald"

    def __init__(self, engine: str, redis_url: str | None, data_dir: str, workers: int = 1) -> None:
        super().__init__()
        self.workers = workers
        self.name = f"herald-{engine}" + (f"-{workers}w" if workers > 1 else "")
        self.label = f"Herald ({engine}" + (f", {workers} workers)" if workers > 1 else ")")
        self.uses_redis = engine == "redis"
        env = {"HERALD_ENGINE": engine}
        if redis_url:
            env["HERALD_REDIS_URL"] = redis_url
        if workers > 1:
            env["HERALD_WORKERS"] = str(workers)
        # Workers get every core (the driver itself is pinned to the client core).
        cpu = SERVER_CPU if workers == 1 else set(range(os.cpu_count() or 1))
        self.server = bench_herald(cpu, Path(data_dir), env=env)
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
        super().__init__()
        self.f = Floor(SERVER_CPU)
        self.proc = self.f.proc
        self.port = self.f.port
        if FLOOR_FRAME_BYTES:
            self.f.set_size(FLOOR_FRAME_BYTES)

    def stop(self) -> None:
        self.f.stop()


class PySrv(Srv):
    def __init__(
        self, name: str, label: str, module: str, kind: str, redis_url: str | None
    ) -> None:
        super().__init__()
        self.name, self.label, self.kind = name, label, kind
        self.uses_redis = redis_url is not None
        self.port = free_port()
        env = dict(os.environ)
        if redis_url:
            env["BENCH_REDIS_URL"] = redis_url
        self.proc = spawn(
            [PY, "-m", module, "--port", str(self.port)], SERVER_CPU, env, stdout=subprocess.DEVNULL
        )
        wait_port(self.port, 20.0, self.proc)


class NodeSrv(Srv):
    name = "node-socketio"
    label = "Node socket.io + redis-adapter"
    kind = "socketio"
    uses_redis = True

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        if not (NODE_DIR / "node_modules").is_dir():
            raise RuntimeError(
                "loadtest/peers/node/node_modules missing: run `npm ci` in loadtest/peers/node"
            )
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node not installed")
        self.port = free_port()
        self.proc = spawn(
            [node, str(NODE_DIR / "socketio_server.js"), str(self.port), redis_url],
            SERVER_CPU,
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.port, 20.0, self.proc)


class NatsSrv(Srv):
    name = "nats"
    label = "NATS server (websocket)"
    kind = "nats"

    def __init__(self, tmp: str) -> None:
        super().__init__()
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
        self.proc = spawn(
            [NATS, "-c", str(conf)],
            SERVER_CPU,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 20.0, self.proc)
        wait_port(self.client_port, 20.0, self.proc)


def start_redis() -> RedisServer:
    """The peers' shared Redis, pinned with the servers."""
    args = ("--appendonly", "no", "--protected-mode", "no", "--maxclients", "20000")
    return RedisServer(args=args, cpu=SERVER_CPU).start()

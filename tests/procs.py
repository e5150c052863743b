"""Real processes for integration tests: redis-server and `herald serve`.

Every process is started on a free port and stopped by its PID. Nothing here
touches the machine's shared Redis on 6379.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
# Durations in tests are multiples of MS, scaled on slow machines (HERALD_TEST_SCALE).
SCALE = float(os.environ.get("HERALD_TEST_SCALE", "1"))
MS = 0.001 * SCALE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


def stop_pid(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop one process by its PID, escalating to SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        # Loud, never a skip: `make test` installs redis-server where it is missing.
        raise RuntimeError("redis-server is not installed; run `make test` (it installs it)")
    return path


@dataclass
class RedisServer:
    """A private redis-server on a free port, with its data in a temp dir."""

    port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="herald-redis-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        cmd = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=True
        )
        return out.stdout


@dataclass
class HeraldServer:
    """A real `herald serve` process (uvicorn) on a free port."""

    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="herald-data-")))
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 20.0) -> HeraldServer:
        env = {
            **os.environ,
            "HERALD_PORT": str(self.port),
            "HERALD_HOST": "127.0.0.1",
            "HERALD_DATA_DIR": str(self.data_dir),
            "HERALD_LOG_LEVEL": "warning",
            **self.env,
        }
        self.log = self.data_dir / "herald.log"
        with self.log.open("ab") as logf:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve"],
                env=env,
                cwd=ROOT,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        wait_port(self.port, timeout, proc=self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.http + "/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError("herald did not become healthy")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_pid(self.proc, sig, timeout=30)

    def kill(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc, signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


@contextlib.contextmanager
def running(*servers: RedisServer | HeraldServer) -> Iterator[None]:
    """Start servers in order; stop them in reverse order whatever happens."""
    started: list[RedisServer | HeraldServer] = []
    try:
        for s in servers:
            s.start()
            started.append(s)
        yield
    finally:
        for s in reversed(started):
            s.stop()

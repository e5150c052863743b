"""Real processes for the harness (benchmarks and tests): redis-server and `herald serve`.

The one place that starts, pins, watches and stops them. Every process is started on a
free loopback port and stopped by its PID (SIGTERM, then SIGKILL); nothing here touches
the machine's shared Redis on 6379. `spawn` registers what it starts so that a run's
`finally` can `stop_all()` whatever is left. tests/procs.py re-exports this module.
"""

from __future__ import annotations

import contextlib
import glob
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Auth settings a private dev-mode server must not inherit from the caller's shell.
AUTH_VARS = ("HERALD_JWT_SECRET", "HERALD_JWT_PUBLIC_KEY", "HERALD_API_KEYS")

_started: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Until something accepts on 127.0.0.1:`port`; fails early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


def spawn(
    args: Sequence[str],
    cpu: int | set[int] | None = None,
    env: dict[str, str] | None = None,
    **kw: Any,
) -> subprocess.Popen[bytes]:
    """Start a process in the checkout, pinned to `cpu` (a core or a set), registered."""
    cores = {cpu} if isinstance(cpu, int) else cpu
    if cores is not None:

        def pin() -> None:  # in the child before exec: every later thread inherits it
            os.sched_setaffinity(0, cores)

        # Only when pinning: a preexec_fn rules out the faster vfork/posix_spawn path.
        kw["preexec_fn"] = pin
    kw.setdefault("cwd", ROOT)
    proc: subprocess.Popen[bytes] = subprocess.Popen(list(args), env=env, **kw)
    _started.append(proc)
    return proc


def stop_pid(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop one process by its PID, escalating to SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ValueError):
        _started.remove(proc)


def stop_all() -> None:
    """Stop every process `spawn` started and nobody stopped yet, newest first."""
    for proc in list(reversed(_started)):
        stop_pid(proc, timeout=5.0)


# ---- what a process uses ----------------------------------------------------------------


def raise_nofile(n: int = 200_000) -> int:
    """Raise this process's fd limit (children inherit it); root may lift the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in ((n, max(n, hard)), (max(soft, hard), hard)):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, want)
            break
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds(pid: int) -> float:
    """On-CPU time (user + system) of every thread of `pid`, ns resolution."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with contextlib.suppress(OSError), open(path) as f:
            total += int(f.read().split()[0])
    return total / 1e9


def cpu_ticks_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) from /proc/<pid>/stat, 10 ms ticks: the user/system split."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat; iowait and idle excluded)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK


def wait_quiet(max_wait: float, busy_below: float = 0.25) -> float:
    """Wait (bounded) until other processes leave the machine mostly idle; last busy share."""
    deadline = time.monotonic() + max_wait
    ncpu = os.cpu_count() or 1
    while True:
        b0, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(1.0)
        share = (machine_busy_seconds() - b0) / ((time.monotonic() - t0) * ncpu)
        if share < busy_below or time.monotonic() > deadline:
            if share >= busy_below:
                log(f"machine still {share:.0%} busy (other processes): measuring anyway")
            return share


def log(msg: str) -> None:
    """A timestamped progress line on stderr (stdout carries the results)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ---- servers ------------------------------------------------------------------------------


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        # Loud, never a skip: `make test` / `make redis-server` installs it where missing.
        raise RuntimeError("redis-server is not installed; run `make redis-server`")
    return path


def _temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


class _Process:
    """What both servers share: one child process, stopped by its PID."""

    proc: subprocess.Popen[bytes] | None
    stop_timeout = 10.0

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_pid(self.proc, sig, timeout=self.stop_timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class RedisServer(_Process):
    """A private redis-server on a free port, with its data in a temp dir."""

    port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()
    dir: Path = field(default_factory=lambda: _temp_dir("herald-redis-"))
    cpu: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            *self.args,
        ]  # fmt: skip
        self.proc = spawn(cmd, self.cpu, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 15.0, proc=self.proc)
        return self

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=True
        )
        return out.stdout


@dataclass
class HeraldServer(_Process):
    """A real `herald serve` process (uvicorn) on a free port.

    `env` is laid over this process's environment, minus the names in `unset`;
    `start` returns once `ready_path` answers 200.
    """

    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    data_dir: Path = field(default_factory=lambda: _temp_dir("herald-data-"))
    cpu: int | set[int] | None = None
    unset: tuple[str, ...] = ()
    ready_path: str = "/healthz"
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    cwd: Path = ROOT  # another checkout runs its own code (benchmarks: before/after)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    stop_timeout = 30.0  # the drain (HERALD_DRAIN_TIMEOUT) runs on SIGTERM

    def start(self, timeout: float = 20.0) -> HeraldServer:
        env = {k: v for k, v in os.environ.items() if k not in self.unset}
        env.update(
            HERALD_PORT=str(self.port),
            HERALD_HOST="127.0.0.1",
            HERALD_DATA_DIR=str(self.data_dir),
            HERALD_LOG_LEVEL="warning",
        )
        env.update(self.env)
        self.log = self.data_dir / "herald.log"
        with self.log.open("ab") as logf:  # the child keeps its own descriptor
            self.proc = spawn(
                [PY, "-m", "gateway.cli", "serve"],
                self.cpu,
                env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
            )
        wait_port(self.port, timeout, proc=self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.http + self.ready_path, timeout=1).status_code == 200:
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"herald serve exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise TimeoutError(f"herald did not answer 200 on {self.ready_path} within {timeout}s")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


def bench_herald(
    cpu: int | set[int] | None,
    data_dir: Path,
    send_buffer: int = 4 << 20,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> HeraldServer:
    """A started `herald serve` set up for measuring fanout (memory engine unless `env`
    says otherwise): dev mode, no history, no batching floor, a 200,000-connection cap,
    and keep-alive pings pushed out of any measured window."""
    settings = {
        "HERALD_ENGINE": "memory",
        "HERALD_MAX_CONNECTIONS": "200000",
        "HERALD_SEND_BUFFER_BYTES": str(send_buffer),
        "HERALD_PING_INTERVAL": "3600",
        "HERALD_PING_TIMEOUT": "600",
        **(env or {}),
    }
    unset = (*AUTH_VARS, "HERALD_HISTORY", "HERALD_MIN_BATCH_MS")
    server = HeraldServer(env=settings, data_dir=data_dir, cpu=cpu, unset=unset, cwd=cwd)
    return server.start()


class Startable(Protocol):
    """Anything `running` can start and stop: a server process, a cluster, a receiver."""

    def start(self) -> Any: ...

    def stop(self) -> None: ...


@contextlib.contextmanager
def running(*servers: Startable) -> Iterator[None]:
    """Start servers in order; stop them in reverse order whatever happens."""
    started: list[Startable] = []
    try:
        for s in servers:
            s.start()
            started.append(s)
        yield
    finally:
        for s in reversed(started):
            s.stop()

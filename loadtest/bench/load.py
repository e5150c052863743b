"""Load generators of the peer benchmark: subscriber processes and the paced publisher."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from loadtest.bench.servers import CLIENT_CPU, FloorSrv, NatsSrv, Srv
from loadtest.loadclient import LoadClient
from loadtest.procs import PY, spawn, stop_pid

PER_CLIENT = 9_000  # sockets per load-generator process (fd limit per process)


class Subs:
    """A set of `loadtest.loadclient sub` processes (≤ PER_CLIENT sockets each)."""

    def __init__(self, srv: Srv, sources: list[str], batch_ms: int | None = None) -> None:
        self.srv = srv
        self.sources = sources
        self.batch_ms = batch_ms
        self.clients: list[LoadClient] = []
        self.load: list[int] = []
        self.total = 0

    def _new(self) -> None:
        s = self.srv
        self.clients.append(LoadClient(s.port, s.kind, CLIENT_CPU, self.sources, self.batch_ms))
        self.load.append(0)

    def connect(
        self,
        n: int,
        topics: int = 1,
        probe_every: int = 0,
        max_seconds: float = 120.0,
        concurrency: int = 200,
    ) -> dict[str, Any]:
        """Open n more sockets (topic of socket i = i % topics), as many as fit in time."""
        t0 = time.monotonic()
        opened = failed = 0
        errors: dict[str, int] = {}
        samples: list[str] = []
        left = n
        while left > 0:
            if not self.clients or self.load[-1] >= PER_CLIENT:
                self._new()
            i = len(self.clients) - 1
            k = min(left, PER_CLIENT - self.load[i])
            remain = max_seconds - (time.monotonic() - t0)
            if remain <= 1:
                break
            r = self.clients[i].call(
                "connect",
                timeout=remain + 30,
                n=k,
                topics=topics,
                offset=self.total,
                probe_every=probe_every,
                concurrency=concurrency,
                max_seconds=remain,
                timeout_each=30,
            )
            opened += r["open"]
            failed += r["failed"]
            errors.update(r.get("errors", {}))
            samples = samples or r.get("samples", [])
            self.load[i] += k
            self.total += k
            left -= k
            if r["failed"]:
                break
        return {
            "open": opened,
            "failed": failed,
            "errors": errors,
            "samples": samples[:3],
            "s": round(time.monotonic() - t0, 2),
        }

    def broadcast(self, cmd: str) -> list[dict[str, Any]]:
        return [c.call(cmd) for c in self.clients]

    def stats(self) -> dict[str, Any]:
        tot: dict[str, Any] = {
            "frames": 0,
            "msgs": 0,
            "bytes": 0,
            "other": 0,
            "subscribed": 0,
            "cpu_s": 0.0,
        }
        for st in self.broadcast("stats"):
            for k in tot:
                tot[k] += st[k]
        return tot

    def latency(self) -> dict[str, Any]:
        # Each process returns its own quantiles; the probes are spread evenly, so the
        # sample-weighted mean of p50/p99 and the max of max are close enough.
        parts = [x for x in self.broadcast("latency") if x.get("n")]
        if not parts:
            return {"n": 0}
        n = sum(x["n"] for x in parts)
        return {
            "n": n,
            "p50_ms": sum(x["p50_ms"] * x["n"] for x in parts) / n,
            "p99_ms": max(x["p99_ms"] for x in parts) if len(parts) > 1 else parts[0]["p99_ms"],
            "max_ms": max(x["max_ms"] for x in parts),
        }

    def stop(self) -> None:
        for c in self.clients:
            c.stop()
        self.clients.clear()


def publish(
    srv: Srv, topics: int, rate: float, count: int, timeout: float, kind: str | None = None
) -> dict[str, Any]:
    """Run the paced publisher (core 1) to completion; the floor is fired from here.

    `kind` overrides the server's dialect (`http`: Herald's HTTP publish)."""
    if isinstance(srv, FloorSrv):
        t0 = time.monotonic()
        for i in range(count):
            srv.f.trigger(i)
            delay = t0 + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return {"sent": count, "wall_s": time.monotonic() - t0}
    port = srv.client_port if isinstance(srv, NatsSrv) else srv.port
    p = spawn(
        [
            PY,
            "-m",
            "loadtest.loadclient",
            "pub",
            "--kind",
            kind or srv.kind,
            "--port",
            str(port),
            "--topics",
            str(topics),
            "--rate",
            str(rate),
            "--count",
            str(count),
            "--max-seconds",
            str(timeout),
        ],
        CLIENT_CPU,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = p.communicate(timeout=timeout + 30)
    finally:
        stop_pid(p)
    if p.returncode != 0 or not out.strip():
        raise RuntimeError(f"publisher failed: {err.decode()[-500:]}")
    res: dict[str, Any] = json.loads(out.splitlines()[-1])
    return res


def sources_for(n: int, per: int = 8000) -> list[str]:
    return [f"127.0.0.{2 + i}" for i in range(max(1, -(-n // per)))]


def wait_delivery(subs: Subs, want: int, timeout: float, stall: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last, last_t = -1, time.monotonic()
    while True:
        st = subs.stats()
        now = time.monotonic()
        if st["msgs"] >= want or now > deadline:
            return st
        if st["msgs"] != last:
            last, last_t = st["msgs"], now
        elif now - last_t > stall:
            return st
        time.sleep(0.1)

"""The peer benchmark's driver: every system in turn, then the Herald-only scenarios."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.bench import servers
from loadtest.bench.report import IMG, markdown, write_docs
from loadtest.bench.scenarios import (
    batching,
    conn_scale,
    idle_rss,
    latency_sweep,
    make_scale,
    run_system,
)
from loadtest.bench.servers import (
    CLIENT_CPU,
    WORKERS,
    FloorSrv,
    HeraldSrv,
    NatsSrv,
    NodeSrv,
    PySrv,
    Srv,
    start_redis,
)
from loadtest.procs import RedisServer, log, raise_nofile, stop_all, wait_quiet


def systems(redis: RedisServer, data_dir: str, tmp: str) -> list[tuple[str, Callable[[], Srv]]]:
    return [
        ("herald-memory", lambda: HeraldSrv("memory", None, data_dir)),
        ("herald-redis", lambda: HeraldSrv("redis", redis.url, data_dir)),
        ("floor", FloorSrv),
        (
            "ws-broadcast",
            lambda: PySrv(
                "ws-broadcast",
                "websockets.broadcast()",
                "loadtest.peers.ws_broadcast",
                "simple",
                None,
            ),
        ),
        (
            "fastapi-cm",
            lambda: PySrv(
                "fastapi-cm",
                "FastAPI ConnectionManager",
                "loadtest.peers.fastapi_cm",
                "simple",
                None,
            ),
        ),
        (
            "broadcaster",
            lambda: PySrv(
                "broadcaster",
                "broadcaster (Redis) + FastAPI",
                "loadtest.peers.broadcaster_app",
                "simple",
                redis.url,
            ),
        ),
        (
            "py-socketio",
            lambda: PySrv(
                "py-socketio",
                "python-socketio + AsyncRedisManager",
                "loadtest.peers.socketio_app",
                "socketio",
                redis.url,
            ),
        ),
        ("node-socketio", lambda: NodeSrv(redis.url)),
        ("nats", lambda: NatsSrv(tmp)),
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_nofile()
    os.sched_setaffinity(0, {CLIENT_CPU})
    sc = make_scale(args.quick, limit)
    t_start = time.monotonic()
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m loadtest.bench" + (" --quick" if args.quick else ""),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}, fd limit {limit}",
        "scale": sc.__dict__,
        "systems": [],
        "skipped": {},
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }
    tmp = tempfile.mkdtemp(prefix="herald-bench-")
    redis = None
    try:
        redis = start_redis()
        table = systems(redis, tmp, tmp)
        only = set(args.only.split(",")) if args.only else None
        for name, make in table:
            if only and name not in only:
                continue
            if time.monotonic() - t_start > sc.budget_s * 0.75:
                result["skipped"][name] = "time budget"
                continue
            busy = wait_quiet(10 if sc.quick else 30, busy_below=0.15)
            log(f"=== {name} (machine busy before start: {busy * 100:.0f} %)")
            r = run_system(
                make,
                sc,
                redis
                if name in ("herald-redis", "broadcaster", "py-socketio", "node-socketio")
                else None,
            )
            r["busy_before_pct"] = round(busy * 100)
            result["systems"].append(r)
            if name == "herald-memory" and r["cap"] and r["cap"][-1]["frame_bytes"]:
                servers.FLOOR_FRAME_BYTES = round(r["cap"][-1]["frame_bytes"])
        made = dict(table)
        if not sc.quick:
            result["idle"] = []
            for name in (
                "herald-memory",
                "floor",
                "ws-broadcast",
                "fastapi-cm",
                "py-socketio",
                "node-socketio",
                "nats",
            ):
                if only and name not in only:
                    continue
                if time.monotonic() - t_start > sc.budget_s * 0.85:
                    result["skipped"][f"idle {name}"] = "time budget"
                    continue
                with contextlib.suppress(Exception):
                    result["idle"].append(idle_rss(made[name], sc.rss_conns))
                    log(f"idle {result['idle'][-1]}")
        if not only or "herald-memory" in only:
            if not sc.quick and time.monotonic() - t_start < sc.budget_s * 0.8:
                result["lat_sweep"] = latency_sweep(made["herald-memory"], sc, [250.0, 500.0])
            result["batching"] = batching(made["herald-memory"], sc)
            if time.monotonic() - t_start < sc.budget_s * 0.9:
                result["scale_test"] = conn_scale(made["herald-memory"], sc)
                log(f"scale {result['scale_test']}")
        if args.scale_workers or (not sc.quick and not only):
            # One process is capped by its fd limit (20,000 here); workers each have
            # their own, as a 2-core machine would be run anyway (one loop per core).
            result["scale_test_workers"] = conn_scale(
                lambda: HeraldSrv("redis", redis.url, tmp, workers=WORKERS), sc, 60_000
            )
            log(f"scale (workers) {result['scale_test_workers']}")
    finally:
        if redis is not None:
            redis.stop()
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    result["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Herald vs peers (issue 5)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="", help="comma-separated system names")
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="also write docs/img/ and rewrite the issue 5 section of docs/BENCHMARKS.md",
    )
    p.add_argument(
        "--scale-workers",
        action="store_true",
        help=f"also run (e) against herald serve --workers {WORKERS} (always in a full run)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hard = 290 if args.quick else 1250

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"bench exceeded {hard} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(hard)
    try:
        r = run(args)
    finally:
        signal.alarm(0)
        stop_all()
    md = markdown(r)
    images: list[str] = []
    if args.write_docs:
        try:
            from loadtest.plots import plot_all

            images = plot_all(r, IMG)
        except Exception as exc:  # plots are a bonus; the tables are the result
            log(f"plots failed: {exc!r}")
        if args.only:
            log("--only: a partial run; docs/BENCHMARKS.md left as it is")
        else:
            write_docs(r, md, images)
    print(md)
    return 0

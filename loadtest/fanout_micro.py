"""Issue 2 micro-benchmark: Herald's fanout CPU and idle memory against a floor.

One run measures, side by side and on the same machine:

1. Herald (`herald serve`, memory engine) with `--sockets` WebSocket connections
   subscribed to one topic. `--messages` messages are published over HTTP
   (`POST /v1/publish`, one request in flight, paced at `--rate` per second) and the
   server process's CPU time (every thread's `sum_exec_runtime` from
   /proc/<pid>/task/*/schedstat, user + system) over the publish phase is divided by
   the frames the load generator actually received: server CPU µs per delivered frame.
2. The floor (`loadtest/floor_server.py`): a minimal uvloop server with the same
   sockets (real handshake), writing one pre-framed bytes object of Herald's frame
   size with `transport.write` to each socket per trigger, same count, same pacing.
3. RSS per idle subscribed connection: VmRSS of the fresh server vs with N idle
   subscribed sockets, divided by N (Herald, and the floor for context).

Phases alternate Herald/floor for `--rounds` rounds so that machine noise hits both.
The server runs pinned to one core (`--server-cpu`), the load generator
(`loadtest/loadclient.py`, one process per server) and this driver to the other.

Run: python -m loadtest.fanout_micro [--sockets 5000] [--messages N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.loadclient import LoadClient, topic_name
from loadtest.procs import (
    PY,
    bench_herald,
    cpu_seconds,
    cpu_ticks_seconds,
    free_port,
    log,
    machine_busy_seconds,
    raise_nofile,
    rss_kib,
    spawn,
    stop_all,
    stop_pid,
    wait_port,
    wait_quiet,
)

TOPIC = topic_name(0)  # the load client's first topic
FD_HEADROOM = 1000
CONNS_PER_CLIENT = 10_000


class Server:
    name = ""
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_kib(self.pid)

    def trigger(self, i: int) -> None:
        raise NotImplementedError

    def counters(self) -> tuple[int, int | None]:
        """(messages dropped, frames written) as the server counts them, if it does."""
        return 0, None

    def stop(self) -> None:
        stop_pid(self.proc)


class Herald(Server):
    name = "herald"

    def __init__(self, cpu: int | None, send_buffer: int, payload: int, data_dir: str) -> None:
        self.server = bench_herald(cpu, Path(data_dir), send_buffer)
        assert self.server.proc is not None
        self.proc, self.port = self.server.proc, self.server.port
        self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.pad = "x" * payload
        self._get("/healthz")

    def _request(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        # uvicorn closes idle keep-alive connections after 5 s: reconnect once then.
        for attempt in (1, 2):
            try:
                self.http.request(method, path, body, {"content-type": "application/json"})
                r = self.http.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                self.http.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _get(self, path: str) -> Any:
        status, body = self._request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return json.loads(body)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = self._get("/v1/stats")
        return out

    def counters(self) -> tuple[int, int | None]:
        st = self.stats()
        return int(st["messages_dropped"]), int(st["frames_written"])

    def trigger(self, i: int) -> None:
        body = json.dumps({"topic": TOPIC, "data": {"seq": f"{i:08d}", "pad": self.pad}})
        status, out = self._request("POST", "/v1/publish", body)
        if status != 202:
            raise RuntimeError(f"publish: {status} {out[:200]!r}")

    def stop(self) -> None:
        self.http.close()
        stop_pid(self.proc)


class Floor(Server):
    name = "floor"

    def __init__(self, cpu: int | None) -> None:
        self.port = free_port()
        self.control_port = free_port()
        self.proc = spawn(
            [
                PY,
                "-m",
                "loadtest.floor_server",
                "--port",
                str(self.port),
                "--control-port",
                str(self.control_port),
            ],
            cpu,
        )
        wait_port(self.control_port, 20.0, self.proc)
        self.ctl = socket.create_connection(("127.0.0.1", self.control_port), 10)
        self.ctl.settimeout(30)
        self.rfile = self.ctl.makefile("rb")

    def _call(self, line: str) -> int:
        self.ctl.sendall(line.encode() + b"\n")
        reply = self.rfile.readline().split()
        if not reply or reply[0] != b"ok":
            raise RuntimeError(f"floor {line!r}: {reply!r}")
        return int(reply[1])

    def set_size(self, n: int) -> int:
        return self._call(f"size {n}")

    def trigger(self, i: int) -> None:
        self._call("fire")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.rfile.close()
            self.ctl.close()
        stop_pid(self.proc)


def load_client(server: Server, cpu: int | None, sources: list[str]) -> LoadClient:
    """A load-client process subscribed the way `server` expects, counting messages."""
    kind = "floor" if server.name == "floor" else "herald"
    return LoadClient(server.port, kind, cpu, sources, mark="topic")


def sources_for(n: int, per_source: int = 10_000) -> list[str]:
    """Enough loopback source addresses that no one of them runs out of ports."""
    k = max(1, -(-n // per_source))
    return [f"127.0.0.{2 + i}" for i in range(k)]


# ---- measurements -------------------------------------------------------------------------


@dataclass
class Phase:
    server: str
    round: int
    messages: int
    sockets: int
    cpu_s: float
    user_s: float
    sys_s: float
    wall_s: float
    frames: int
    msgs: int
    frame_bytes: float
    dropped: int
    client_cpu_s: float
    idle_cpu_s: float = 0.0
    other_load: float = 0.0  # share of all cores busy with other processes meanwhile
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def us_per_frame(self) -> float:
        return self.cpu_s / self.frames * 1e6 if self.frames else float("nan")

    @property
    def net_us_per_frame(self) -> float:
        """Minus what the server burns idle over the same wall time (timers, wheel)."""
        return (self.cpu_s - self.idle_cpu_s) / self.frames * 1e6 if self.frames else float("nan")


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def idle_rate(server: Server, seconds: float) -> float:
    """Server CPU seconds per wall second with its sockets connected and quiet."""
    c0, t0 = server.cpu(), time.monotonic()
    time.sleep(seconds)
    return (server.cpu() - c0) / (time.monotonic() - t0)


def publish_phase(
    server: Server,
    client: LoadClient,
    sockets: int,
    messages: int,
    rate: float,
    rnd: int,
    idle: float,
    timeout: float,
) -> Phase:
    client.call("reset")
    dropped0, written0 = server.counters()
    before = client.call("stats")
    m0, me0 = machine_busy_seconds(), _self_cpu()
    c0, k0, t0 = server.cpu(), cpu_ticks_seconds(server.pid), time.monotonic()
    for i in range(messages):
        server.trigger(i)
        delay = t0 + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    want = sockets * messages
    deadline = time.monotonic() + timeout
    while True:
        st = client.call("stats")
        if st["msgs"] >= want or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    c1, k1, t1 = server.cpu(), cpu_ticks_seconds(server.pid), time.monotonic()
    m1, me1 = machine_busy_seconds(), _self_cpu()
    dropped1, written1 = server.counters()
    dropped = dropped1 - dropped0
    written = written1 - written0 if written1 is not None and written0 is not None else None
    if st["msgs"] != want:
        raise RuntimeError(
            f"{server.name}: clients got {st['msgs']} of {want} messages "
            f"(frames {st['frames']}, dropped {dropped}, other {st['other']})"
        )
    if dropped:
        raise RuntimeError(f"{server.name} dropped {dropped} messages: slow down --rate")
    if written is not None and written != st["frames"]:
        raise RuntimeError(f"{server.name} wrote {written} frames, clients got {st['frames']}")
    return Phase(
        server=server.name,
        round=rnd,
        messages=messages,
        sockets=sockets,
        cpu_s=c1 - c0,
        user_s=k1[0] - k0[0],
        sys_s=k1[1] - k0[1],
        wall_s=t1 - t0,
        frames=st["frames"],
        msgs=st["msgs"],
        frame_bytes=st["bytes"] / st["frames"] if st["frames"] else 0.0,
        dropped=dropped,
        client_cpu_s=st["cpu_s"] - before["cpu_s"],
        idle_cpu_s=idle * (t1 - t0),
        extra={"server_frames_written": written, "client_other_frames": st["other"]},
        other_load=max(
            0.0,
            ((m1 - m0) - (c1 - c0) - (st["cpu_s"] - before["cpu_s"]) - (me1 - me0))
            / ((t1 - t0) * (os.cpu_count() or 1)),
        ),
    )


def measure_rss(
    server: Server, clients: list[LoadClient], n: int, settle: float, timeout: float
) -> dict[str, Any]:
    """VmRSS of the quiet server, then with `n` idle subscribed sockets (split over clients)."""
    time.sleep(settle)
    rss0 = server.rss()
    t0 = time.monotonic()
    for i, client in enumerate(clients):
        client.connect(n // len(clients) + (i < n % len(clients)), timeout)
    connect_s = time.monotonic() - t0
    time.sleep(settle)
    rss1 = server.rss()
    return {
        "server": server.name,
        "conns": n,
        "rss0_kib": rss0,
        "rssN_kib": rss1,
        "kib_per_conn": (rss1 - rss0) / n,
        "connect_s": round(connect_s, 2),
    }


# ---- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_nofile()
    # The server needs one fd per socket plus headroom; the hard limit may be fixed.
    if args.rss_conns is None:
        args.rss_conns = args.sockets if args.quick else min(20_000, limit - FD_HEADROOM)
    need = max(args.sockets, args.rss_conns) + FD_HEADROOM
    if limit < need:
        raise SystemExit(
            f"fd limit {limit} < {need}: lower --sockets/--rss-conns or raise the hard `ulimit -n`"
        )
    os.sched_setaffinity(0, {args.client_cpu})
    data_dir = tempfile.mkdtemp(prefix="herald-micro-")
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m loadtest.fanout_micro " + " ".join(sys.argv[1:]),
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "loadavg_start": loadavg(),
        "params": vars(args).copy(),
    }
    phases: list[Phase] = []
    rss: list[dict[str, Any]] = []
    herald = floor = hc = fc = None
    try:
        # -- CPU per frame (and RSS at --sockets) on one instance of each server --
        herald = Herald(args.server_cpu, args.send_buffer, args.payload, data_dir)
        floor = Floor(args.server_cpu)
        srcs = sources_for(args.sockets)
        hc = load_client(herald, args.client_cpu, srcs)
        fc = load_client(floor, args.client_cpu, srcs)
        rss.append(measure_rss(herald, [hc], args.sockets, args.settle, args.connect_timeout))
        rss.append(measure_rss(floor, [fc], args.sockets, args.settle, args.connect_timeout))
        log(f"connected {args.sockets} sockets to each server; RSS {rss}")
        # Warm up both paths and size the floor's frame like Herald's.
        for _ in range(3):
            publish_phase(herald, hc, args.sockets, 1, args.rate, 0, 0.0, args.phase_timeout)
        warm = publish_phase(herald, hc, args.sockets, 1, args.rate, 0, 0.0, args.phase_timeout)
        size = round(warm.frame_bytes)
        floor.set_size(size)
        for _ in range(3):
            publish_phase(floor, fc, args.sockets, 1, args.rate, 0, 0.0, args.phase_timeout)
        result["frame_bytes"] = size
        idle_h = idle_rate(herald, args.idle_seconds)
        idle_f = idle_rate(floor, args.idle_seconds)
        result["idle_cpu_pct"] = {"herald": idle_h * 100, "floor": idle_f * 100}
        pair = [(herald, hc, idle_h), (floor, fc, idle_f)]
        for rnd in range(1, args.rounds + 1):
            # Alternate which server goes first, so slow drifts in machine load cancel out.
            for srv, cl, idle in pair if rnd % 2 else pair[::-1]:
                busy = wait_quiet(args.quiet_wait)
                ph = publish_phase(
                    srv, cl, args.sockets, args.messages, args.rate, rnd, idle, args.phase_timeout
                )
                ph.extra["busy_before"] = busy
                phases.append(ph)
                log(
                    f"round {rnd} {srv.name}: {ph.us_per_frame:.2f} µs/frame "
                    f"({ph.cpu_s:.3f} s CPU, {ph.frames} frames, {ph.frame_bytes:.0f} B, "
                    f"client {ph.client_cpu_s:.2f} s, dropped {ph.dropped}, "
                    f"other load {ph.other_load:.0%}, busy before {busy:.0%})"
                )
        result["herald_stats"] = herald.stats()
        for obj in (hc, fc, herald, floor):
            obj.stop()
        herald = floor = hc = fc = None
        # -- RSS per idle connection at a larger N, fresh processes --
        if args.rss_conns > args.sockets:
            srcs = sources_for(args.rss_conns)
            nclients = -(-args.rss_conns // CONNS_PER_CLIENT)
            for make in (
                lambda: Herald(args.server_cpu, args.send_buffer, args.payload, data_dir),
                lambda: Floor(args.server_cpu),
            ):
                srv = make()
                cls = [load_client(srv, args.client_cpu, srcs) for _ in range(nclients)]
                try:
                    rss.append(
                        measure_rss(srv, cls, args.rss_conns, args.settle, args.connect_timeout)
                    )
                    log(f"RSS {rss[-1]}")
                finally:
                    for cl in cls:
                        cl.stop()
                    srv.stop()
    finally:
        for left in (hc, fc, herald, floor):
            if left is not None:
                with contextlib.suppress(Exception):
                    left.stop()
        stop_all()
        shutil.rmtree(data_dir, ignore_errors=True)
    result["loadavg_end"] = loadavg()
    result["phases"] = [
        {**ph.__dict__, "us_per_frame": ph.us_per_frame, "net_us_per_frame": ph.net_us_per_frame}
        for ph in phases
    ]
    result["rss"] = rss
    ratios = []
    for rnd in range(1, args.rounds + 1):
        h = next(p for p in phases if p.round == rnd and p.server == "herald")
        f = next(p for p in phases if p.round == rnd and p.server == "floor")
        ratios.append(h.us_per_frame / f.us_per_frame)
    result["ratios"] = ratios
    result["ratio_median"] = statistics.median(ratios)
    return result


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def markdown(r: dict[str, Any]) -> str:
    med = statistics.median
    p = r["params"]
    lines = [
        f"Command: `{r['command']}` — {r['date']} — {r['machine']}; "
        f"load average {' '.join(r['loadavg_start'])} at start, "
        f"{' '.join(r['loadavg_end'])} at end.",
        "",
        f"{p['sockets']:,} subscribed sockets on one topic; {p['messages']} messages per phase "
        f"at {p['rate']:g}/s; frame {r['frame_bytes']} B; idle server CPU: herald "
        f"{r['idle_cpu_pct']['herald']:.2f} %, floor {r['idle_cpu_pct']['floor']:.2f} %.",
        "",
        "| round | server | frames delivered | dropped | server CPU s (user / sys) "
        "| **µs/frame** | user µs/frame | µs/frame net of idle | client CPU s "
        "| other load | Herald/floor |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for ph in r["phases"]:
        by_round.setdefault(ph["round"], {})[ph["server"]] = ph
    for rnd, pair in sorted(by_round.items()):
        for name in ("herald", "floor"):
            ph = pair[name]
            ratio = pair["herald"]["us_per_frame"] / pair["floor"]["us_per_frame"]
            lines.append(
                f"| {rnd} | {name} | {ph['frames']:,} | {ph['dropped']} "
                f"| {ph['cpu_s']:.3f} ({ph['user_s']:.2f} / {ph['sys_s']:.2f}) "
                f"| **{ph['us_per_frame']:.2f}** | {ph['user_s'] / ph['frames'] * 1e6:.2f} "
                f"| {ph['net_us_per_frame']:.2f} | {ph['client_cpu_s']:.2f} "
                f"| {ph['other_load']:.0%} | {f'**{ratio:.2f}×**' if name == 'herald' else ''} |"
            )

    def col(server: str, key: str) -> float:
        if key == "user":
            return float(
                med(x["user_s"] / x["frames"] * 1e6 for x in r["phases"] if x["server"] == server)
            )
        return float(med(x[key] for x in r["phases"] if x["server"] == server))

    lines.append(
        f"| median | herald / floor | | | | **{col('herald', 'us_per_frame'):.2f} / "
        f"{col('floor', 'us_per_frame'):.2f}** | {col('herald', 'user'):.2f} / "
        f"{col('floor', 'user'):.2f} | | | | **{r['ratio_median']:.2f}×** |"
    )
    lines += [
        "",
        "| server | idle subscribed conns | RSS before (KiB) | RSS with conns (KiB) "
        "| **KiB per conn** |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for m in r["rss"]:
        lines.append(
            f"| {m['server']} | {m['conns']:,} | {m['rss0_kib']:,} | {m['rssN_kib']:,} "
            f"| **{m['kib_per_conn']:.2f}** |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Herald fanout CPU/frame and RSS/conn vs a floor")
    p.add_argument("--sockets", type=int, default=5000)
    p.add_argument("--messages", type=int, default=None, help="per phase (200; quick 100)")
    p.add_argument("--rate", type=float, default=10.0, help="messages per second")
    p.add_argument("--rounds", type=int, default=None, help="Herald/floor pairs (3; quick 1)")
    p.add_argument(
        "--rss-conns",
        type=int,
        default=None,
        help="idle connections for the RSS figure (20000 or what the fd limit "
        "allows; quick: --sockets)",
    )
    p.add_argument("--payload", type=int, default=64, help="padding bytes in each message")
    p.add_argument("--send-buffer", type=int, default=4 << 20, help="HERALD_SEND_BUFFER_BYTES")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--settle", type=float, default=1.0, help="seconds before reading RSS")
    p.add_argument("--idle-seconds", type=float, default=2.0)
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each phase, wait up to this long for other processes to go quiet",
    )
    p.add_argument("--connect-timeout", type=float, default=60.0)
    p.add_argument("--phase-timeout", type=float, default=60.0)
    p.add_argument("--max-seconds", type=float, default=900.0, help="abort the whole run")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = p.parse_args(argv)
    if args.messages is None:
        args.messages = 100 if args.quick else 200
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"run exceeded --max-seconds {args.max_seconds}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.max_seconds))
    try:
        result = run(args)
    finally:
        signal.alarm(0)
        stop_all()
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    print(markdown(result))
    hs = result["ratio_median"]
    per_conn = [m["kib_per_conn"] for m in result["rss"] if m["server"] == "herald"]
    print(
        f"\nHerald/floor CPU per frame: {hs:.2f}× (target ≤ 1.5×: "
        f"{'met' if hs <= 1.5 else 'NOT met'}); Herald KiB/conn: "
        + ", ".join(f"{k:.2f}" for k in per_conn)
        + f" (target ≤ 16: {'met' if max(per_conn) <= 16 else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

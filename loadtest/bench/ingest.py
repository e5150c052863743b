"""Issue 14: what getting a message *into* Herald costs, against a raw ASGI floor.

One run starts, side by side:

- the floor: `floor_app` below, a raw ASGI app under the same uvicorn + httptools +
  uvloop as Herald, which reads the body, parses it with orjson and answers 202;
- Herald on the memory engine (queues in SQLite);
- Herald on the redis engine, with a redis-server started here on a free port.

Every server (and that redis-server) is pinned to core 0; the load generators to
core 1. HTTP load is `wrk` (installed with apt-get where missing) with a Lua script
per request shape, 32 keep-alive connections, a bounded duration. WebSocket publish
and the queue receive/ack loops use the light asyncio clients in this module, run as
a pinned child process. Server CPU is utime + stime from /proc/<pid>/stat (every
thread), read before and after each phase; Redis CPU the same, reported apart.

Phases (each server in turn, so machine noise hits all of them alike):
  publish     POST /v1/publish, a 90-byte message, no subscribers
  batch       POST /v1/publish/batch, 100 entries
  ws          WebSocket `publish` commands, one in flight per connection
  qsend       POST /v1/queues/{q}/messages
  qbatch      POST /v1/queues/{q}/messages/batch, 100 entries
  recv+ack    POST receive (max 100) then ack those receipts, from a filled queue
  e2e         send batch -> receive -> ack of 100 messages, per worker, in a loop

Run: python -m loadtest.bench.ingest [--seconds 5] [--rounds 1] [--only publish,batch]
     [--servers floor,memory,redis] [--json out.json] [--baseline DIR]
     python -m loadtest.bench.ingest --fanout SUBS,TOPICS,RATE,SECONDS [--rounds N]
     [--servers floor,memory,redis] [--baseline DIR]   (the fanout latency scenario)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from loadtest.floor_server import read_body
from loadtest.procs import (
    CLK_TCK,
    PY,
    ROOT,
    HeraldServer,
    RedisServer,
    free_port,
    log,
    raise_nofile,
    spawn,
    stop_all,
    stop_pid,
    wait_port,
)

SERVER_CPU = 0
LOAD_CPU = 1
CONNS = 32
QUEUE_WORKERS = 16  # queue loops in flight (each request carries up to 100 messages)
QUEUE = "ingest"
TOPIC = "bench.ingest"
# 90 bytes on the wire: {"topic":"bench.ingest","data":{...}}
MESSAGE = {"topic": TOPIC, "data": {"n": 12345, "text": "x" * 45}}
BATCH = 100
JSON = {"content-type": "application/json"}

# ---- the floor -----------------------------------------------------------------------------

_FLOOR_BODY = b'{"id":"0"}'
_FLOOR_START = {
    "type": "http.response.start",
    "status": 202,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_FLOOR_BODY)).encode()),
    ],
}
_FLOOR_END = {"type": "http.response.body", "body": _FLOOR_BODY}


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the whole body, parse it with orjson, answer 202: the least an API can do."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    if body:
        orjson.loads(body)
    await send(_FLOOR_START)
    await send(_FLOOR_END)


# ---- servers -------------------------------------------------------------------------------


def proc_cpu(pid: int | None) -> float:
    """utime + stime of every thread of `pid`, in seconds (0 for no process)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Target:
    name: str
    port: int
    pid: int
    redis_pid: int | None = None
    queues: bool = True
    ws: bool = True


def start_floor(tmp: Path) -> Target:
    port = free_port()
    cmd = [PY, "-m", "uvicorn", "loadtest.bench.ingest:floor_app", "--port", str(port)]
    cmd += ["--http", "httptools", "--loop", "uvloop", "--lifespan", "off"]
    cmd += ["--no-access-log", "--log-level", "warning"]
    with (tmp / "floor.log").open("ab") as logf:
        proc = spawn(cmd, SERVER_CPU, stdout=logf, stderr=subprocess.STDOUT)
    wait_port(port, 15.0, proc=proc)
    return Target("floor", port, proc.pid, queues=False, ws=False)


def start_herald(engine: str, tmp: Path, checkout: Path | None = None) -> Target:
    """`herald serve` on `engine`; from another `checkout` (e.g. main) when given."""
    name = engine if checkout is None else f"{engine}@base"
    env = {"HERALD_ENGINE": engine, "HERALD_PING_INTERVAL": "3600"}
    redis_pid = None
    if engine == "redis":
        redis = RedisServer(cpu=SERVER_CPU, dir=tmp / f"redis-{name}").start()
        env["HERALD_REDIS_URL"] = redis.url
        redis_pid = redis.pid
    unset = ("HERALD_JWT_SECRET", "HERALD_JWT_PUBLIC_KEY", "HERALD_API_KEYS", "HERALD_HISTORY")
    data_dir = tmp / f"herald-{name}"
    data_dir.mkdir()
    srv = HeraldServer(env=env, data_dir=data_dir, cpu=SERVER_CPU, unset=unset)
    if checkout is not None:
        srv.cwd = checkout
    srv.start()
    r = httpx.put(f"{srv.http}/v1/queues/{QUEUE}", json={}, timeout=10)
    r.raise_for_status()
    return Target(name, srv.port, srv.pid, redis_pid)


# ---- load ----------------------------------------------------------------------------------


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        log("installing wrk (apt-get install -y wrk)")
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
        path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed and apt-get could not install it")
    return path


def _lua(body: bytes, rate: float = 0.0) -> str:
    # A Lua long string keeps the JSON as is (it never contains "]==]").
    script = (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
    )
    if rate > 0:
        # wrk's `delay()` pauses each connection before its next request: CONNS
        # connections at CONNS/rate seconds apart ask about `rate` requests/s of every
        # server alike (a little less, by the reply's latency), so the servers are
        # compared at one request rate instead of each at its own saturation rate.
        script += f"function delay()\n  return {CONNS * 1000 / rate:.3f}\nend\n"
    return script


def run_wrk(
    wrk: str, url: str, body: bytes, seconds: float, tmp: Path, rate: float = 0.0
) -> dict[str, Any]:
    script = tmp / "post.lua"
    script.write_text(_lua(body, rate))
    cmd = ["taskset", "-c", str(LOAD_CPU), wrk, "-t1", f"-c{CONNS}", f"-d{seconds:g}s"]
    cmd += ["-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": requests,
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def run_client(mode: str, port: int, seconds: float) -> dict[str, Any]:
    """One of this module's asyncio clients as a child pinned to the load core."""
    cmd = [PY, "-m", "loadtest.bench.ingest", "client", mode, "--port", str(port)]
    cmd += ["--seconds", f"{seconds:g}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = spawn(cmd, LOAD_CPU, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=seconds + 60)
    stop_pid(proc)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, Any] = json.loads(out)
    # Near `seconds`, the client (one core, Python) is what limits the rate.
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    result["client_cpu_s"] = round(used, 2)
    return result


def publish_body() -> bytes:
    return orjson.dumps(MESSAGE)


def batch_body() -> bytes:
    # `messages`: the name every version of the API accepts (`entries` is newer).
    return orjson.dumps({"messages": [MESSAGE] * BATCH})


def qsend_body() -> bytes:
    return orjson.dumps({"body": MESSAGE["data"]})


def qbatch_body() -> bytes:
    return orjson.dumps({"entries": [{"body": MESSAGE["data"]}] * BATCH})


@dataclass
class Phase:
    name: str
    per_request: int  # messages per request
    herald_only: str = ""  # "queues" / "ws": which targets have it
    path: str = ""
    body: Callable[[], bytes] | None = None


PHASES = [
    Phase("publish", 1, path="/v1/publish", body=publish_body),
    Phase("batch", BATCH, path="/v1/publish/batch", body=batch_body),
    Phase("ws", 1, herald_only="ws"),
    Phase("qsend", 1, "queues", f"/v1/queues/{QUEUE}/messages", qsend_body),
    Phase("qbatch", BATCH, "queues", f"/v1/queues/{QUEUE}/messages/batch", qbatch_body),
    Phase("recv+ack", 1, "queues"),
    Phase("e2e", 1, "queues"),
]


def measure(
    t: Target, ph: Phase, wrk: str, seconds: float, tmp: Path, rate: float = 0.0
) -> dict[str, Any]:
    s0, r0, w0 = proc_cpu(t.pid), proc_cpu(t.redis_pid), time.monotonic()
    if ph.body is not None:
        floor_path = "/" if t.name == "floor" else ph.path
        res = run_wrk(wrk, f"http://127.0.0.1:{t.port}{floor_path}", ph.body(), seconds, tmp, rate)
        res["messages"] = res["requests"] * ph.per_request
    else:
        res = run_client(ph.name, t.port, seconds)
    wall = time.monotonic() - w0
    server, redis = proc_cpu(t.pid) - s0, proc_cpu(t.redis_pid) - r0
    n = max(res["requests"], 1)
    m = max(res["messages"], 1)
    res.update(
        wall_s=round(wall, 2),
        server_cpu_s=round(server, 3),
        redis_cpu_s=round(redis, 3),
        req_per_s=round(res["requests"] / seconds),
        msg_per_s=round(res["messages"] / seconds),
        server_us_per_req=round(server / n * 1e6, 1),
        redis_us_per_req=round(redis / n * 1e6, 1),
        msg_per_server_cpu_s=round(m / server) if server else None,
    )
    return res


# ---- the asyncio clients (run as `client <mode>`) -------------------------------------------


async def _ws_publisher(port: int, stop_at: float, counts: list[int]) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/ws", compression=None) as ws:
        i = 0
        cmd = dict(MESSAGE, op="publish")
        while time.monotonic() < stop_at:
            i += 1
            cmd["id"] = i
            await ws.send(orjson.dumps(cmd).decode())
            reply = orjson.loads(await ws.recv())
            if reply.get("op") != "published":
                raise RuntimeError(f"unexpected reply {reply}")
            counts[0] += 1


class _Http:
    """A keep-alive HTTP/1.1 client: one write per request, Content-Length replies.

    httpx writes a request in pieces, and Nagle's algorithm then holds the last one
    for the server's delayed ACK (~40 ms): the loop would measure that, not Herald.
    """

    _LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> _Http:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> Any:
        head = (
            f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        reply = await self.reader.readuntil(b"\r\n\r\n")
        length = self._LENGTH.search(reply)
        data = await self.reader.readexactly(int(length.group(1)) if length else 0)
        if not reply.startswith((b"HTTP/1.1 2",)):
            raise RuntimeError(f"{path}: {reply[:12]!r} {data[:200]!r}")
        return orjson.loads(data)

    def close(self) -> None:
        self.writer.close()


async def _queue_worker(mode: str, port: int, stop_at: float, counts: list[int]) -> None:
    base = f"/v1/queues/{QUEUE}"
    batch = qbatch_body()
    receive = orjson.dumps({"max": BATCH})
    http = await _Http.open(port)
    try:
        while time.monotonic() < stop_at:
            if mode == "e2e":
                await http.post(base + "/messages/batch", batch)
                counts[0] += 1
            got = await http.post(base + "/receive", receive)
            counts[0] += 1
            receipts = [m["receipt"] for m in got["messages"]]
            if not receipts:
                continue
            await http.post(base + "/ack", orjson.dumps({"receipts": receipts}))
            counts[0] += 1
            counts[1] += len(receipts)
    finally:
        http.close()


async def _client(mode: str, port: int, seconds: float) -> dict[str, Any]:
    stop_at = time.monotonic() + seconds
    counts = [0, 0]  # requests, messages
    if mode == "ws":
        await asyncio.gather(*(_ws_publisher(port, stop_at, counts) for _ in range(CONNS)))
        counts[1] = counts[0]
    else:
        # Few workers: each request carries up to 100 messages.
        workers = range(QUEUE_WORKERS)
        await asyncio.gather(*(_queue_worker(mode, port, stop_at, counts) for _ in workers))
    return {"requests": counts[0], "messages": counts[1]}


def client_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["ws", "recv+ack", "e2e"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    import uvloop

    print(json.dumps(uvloop.run(_client(args.mode, args.port, args.seconds))))
    return 0


# ---- the fanout latency scenario, publishes included ---------------------------------------


def fanout_latency(
    subs: int,
    topics: int,
    rate: float,
    seconds: float,
    tmp: Path,
    baseline: Path | None,
    rounds: int = 1,
    names: tuple[str, ...] = ("floor", "memory", "redis"),
) -> str:
    """Issue 5's scenario (b) on the fanout floor and both engines, one by one.

    `subs` WebSocket subscribers over `topics` topics, `rate` HTTP publishes per second
    (`POST /v1/publish`, pipelined on one keep-alive connection). The floor is
    `loadtest/floor_server.py --fanout` (uvicorn + httptools ingest, raw WebSocket
    subscribers, one pre-built frame written per socket of the topic); with `baseline`,
    that checkout's Herald runs too (`<engine>@base`). Every round runs every server.
    """
    from loadtest.bench import load, scenarios, servers

    raise_nofile()
    redis = servers.start_redis()
    sc = scenarios.Scale(lat_subs=subs, lat_topics=topics, lat_rate=rate, lat_seconds=seconds)
    checkouts = {"": ROOT} if baseline is None else {"@base": baseline, "": ROOT}
    rows = [
        f"{subs:,} subscribers, {topics} topics, {rate:g} publishes/s for {seconds:g} s",
        "",
        "| round | server | server CPU % | × floor | p50 ms | p99 ms | max ms | delivered "
        "| client CPU % | load avg |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    runs: list[tuple[str, str, Path]] = []  # (name, engine, checkout)
    for engine in names:
        if engine == "floor":
            runs.append(("floor", "floor", ROOT))
            continue
        runs += [(engine + tag, engine, co) for tag, co in checkouts.items()]
    for rnd in range(1, rounds + 1):
        floor_pct: float | None = None
        for name, engine, checkout in runs:
            load_avg = os.getloadavg()[0]
            srv: servers.Srv
            if engine == "floor":
                srv = servers.FanoutFloorSrv()
            else:
                data = tmp / f"lat-{name}-{rnd}"
                data.mkdir()
                url = redis.url if engine == "redis" else None
                srv = servers.HeraldSrv(engine, url, str(data), checkout=checkout)
            try:
                r = scenarios.latency(srv, sc, load.sources_for(subs), pub_kind="http")
            finally:
                srv.stop()
            log(f"fanout latency round {rnd} {name}: {r} (load average {load_avg:.2f})")
            if "error" in r:
                rows.append(f"| {rnd} | {name} | {r['error']} |")
                continue
            pct = r["server_cpu_pct"]
            if engine == "floor":
                floor_pct = pct
            ratio = f"{pct / floor_pct:.2f}" if floor_pct and engine != "floor" else ""
            rows.append(
                f"| {rnd} | {name} | {pct:g} | {ratio} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                f"| {r['max_ms']:.2f} | {r['delivery_ratio']:.4f} | {r['client_cpu_pct']:g} "
                f"| {load_avg:.2f} |"
            )
    redis.stop()
    return "\n".join(rows)


# ---- report --------------------------------------------------------------------------------


def table(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """Markdown: per phase and server, the median round (by server µs per request)."""
    lines = [
        "| phase | server | req/s | msg/s | server µs/req | × floor | redis µs/req "
        "| msg per server CPU-s | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for phase, by_server in results.items():
        floor = _median(by_server.get("floor", []))
        for server, rounds in by_server.items():
            r = _median(rounds)
            if r is None:
                continue
            ratio = ""
            if floor is not None and server != "floor" and floor["server_us_per_req"]:
                ratio = f"{r['server_us_per_req'] / floor['server_us_per_req']:.2f}"
            errors = r.get("non2xx", 0) or r.get("socket_errors", "") or ""
            lines.append(
                f"| {phase} | {server} | {r['req_per_s']:,} | {r['msg_per_s']:,} "
                f"| {r['server_us_per_req']:g} | {ratio} | {r['redis_us_per_req']:g} "
                f"| {r['msg_per_server_cpu_s'] or 0:,} | {errors} |"
            )
    return "\n".join(lines)


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not rounds:
        return None
    return sorted(rounds, key=lambda r: r["server_us_per_req"])[len(rounds) // 2]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--seconds", type=float, default=5.0, help="per phase and server")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated phases")
    p.add_argument("--servers", default="floor,memory,redis")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="HTTP phases: ask every server for about this many requests/s (wrk delay()) "
        "instead of as many as it can answer",
    )
    p.add_argument(
        "--fanout",
        default="",
        metavar="SUBS,TOPICS,RATE,SECONDS",
        help="run only the fanout latency scenario, e.g. 2000,100,200,5 or 10000,100,1000,10",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout (e.g. `git archive main`): its Herald runs too, as <engine>@base",
    )
    args = p.parse_args(argv)
    if args.fanout:
        subs, topics, rate, seconds = args.fanout.split(",")
        tmp = Path(tempfile.mkdtemp(prefix="herald-ingest-"))
        try:
            base = args.baseline.resolve() if args.baseline else None
            names = tuple(args.servers.split(","))
            res = fanout_latency(
                int(subs), int(topics), float(rate), float(seconds), tmp, base, args.rounds, names
            )
            print(res)
        finally:
            stop_all()
        return 0
    wrk = ensure_wrk()
    phases = [ph for ph in PHASES if not args.only or ph.name in args.only.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="herald-ingest-"))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        starters = {"floor": start_floor, "memory": lambda d: start_herald("memory", d)}
        starters["redis"] = lambda d: start_herald("redis", d)
        targets = [starters[name](tmp) for name in args.servers.split(",")]
        if args.baseline is not None:
            base = args.baseline.resolve()
            engines = [n for n in args.servers.split(",") if n != "floor"]
            targets += [start_herald(engine, tmp, base) for engine in engines]
        log(f"servers: {[(t.name, t.pid, t.redis_pid) for t in targets]}")
        for _ in range(args.rounds):
            for ph in phases:
                for t in targets:
                    if (ph.herald_only == "queues" and not t.queues) or (
                        ph.herald_only == "ws" and not t.ws
                    ):
                        continue
                    res = measure(t, ph, wrk, args.seconds, tmp, args.rate)
                    log(f"{ph.name} {t.name}: {res}")
                    results.setdefault(ph.name, {}).setdefault(t.name, []).append(res)
    finally:
        stop_all()
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())

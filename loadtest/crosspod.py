"""Cross-pod delivery through the Redis backplane: one gateway process vs two.

Starts a private redis-server and N `herald serve --engine redis` processes on free
loopback ports (stopped by PID at the end, whatever happens), then per setup:

1. Throughput. Two topics; the subscribers of topic j sit on gateway j (mod N) and
   topic j is published through gateway j + 1 (mod N), by closed-loop publishers
   POSTing `/v1/publish/batch`. With two gateways every message crosses pods, and
   each gateway receives only the topic its own sockets want (interest routing).
   Deliveries per second = messages counted at the sockets in a fixed window.
2. Latency. A fixed rate of single publishes to gateway 0 while one `websockets`
   client on the *last* gateway reads them; the send time (perf_counter) travels
   in the message data, so p50/p99 are publish -> receive across pods (over Redis
   on the same pod when there is one gateway).

The subscriber sockets belong to one `loadtest/loadclient.py` process (raw uvloop
protocols, `{"topic":` markers counted with `bytes.count`, 4 MiB receive buffers), so
the load generator stays much cheaper than the gateways it measures and shares no GIL
with the publishers. Setups alternate (1, 2, 1, 2, ...) and each keeps its median run,
because the gateways share the machine's cores with Redis and the load generator.
Bounded: a few seconds per phase, at most `--max-batches` publish calls. Run:

    python -m loadtest.crosspod            # 3 runs per setup, about 90 s
    python -m loadtest.crosspod --quick    # 1 run per setup, about 25 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import websockets

from loadtest.loadclient import LoadClient
from loadtest.procs import HeraldServer, RedisServer, cpu_seconds, running

TOPIC = "bench.crosspod"
LAT_TOPIC = "bench.latency"


# ---- processes (free ports, stopped by PID) ------------------------------------------


@contextlib.contextmanager
def deployment(gateways: int, history: bool = False) -> Iterator[tuple[list[tuple[int, int]], int]]:
    """A private Redis and `gateways` Herald processes.

    Yields the gateways' (HTTP port, PID)s and the Redis PID.
    """
    redis = RedisServer(args=("--appendonly", "no"))
    env = {
        "HERALD_ENGINE": "redis",
        "HERALD_REDIS_URL": redis.url,
        "HERALD_SEND_BUFFER_BYTES": str(8 << 20),
    }
    if history:
        env["HERALD_HISTORY"] = json.dumps([{"pattern": "bench.>", "size": 1000}])
    pods = [HeraldServer(env=env, ready_path="/readyz") for _ in range(gateways)]
    try:
        with running(redis, *pods):
            yield [(pod.port, pod.pid) for pod in pods], redis.pid
    finally:
        for d in (redis.dir, *(pod.data_dir for pod in pods)):
            shutil.rmtree(d, ignore_errors=True)


# ---- subscribers -----------------------------------------------------------------------


class Subscribers:
    """The subscriber sockets, in one load-client process (no GIL shared with us).

    Socket k subscribes topic k % 2 on the gateway at `ports[k % 2]`.
    """

    def __init__(self, ports: list[int], topics: list[str], sockets: int) -> None:
        self.client = LoadClient(ports[0], mark="topic", rcvbuf=4 << 20)
        self.pid = self.client.pid
        try:
            for j, (port, topic) in enumerate(zip(ports, topics, strict=True)):
                self.client.connect(len(range(j, sockets, 2)), topic=topic, port=port)
        except BaseException:
            self.client.stop()
            raise

    @property
    def count(self) -> int:
        """Messages delivered to the sockets so far."""
        return int(self.client.call("stats")["msgs"])

    def close(self) -> None:
        self.client.stop()


# ---- phases ----------------------------------------------------------------------------------


@dataclass
class Result:
    gateways: int
    sockets: int
    published: int = 0
    delivered: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    gateway_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    reconnects: int = 0
    dropped: int = 0

    @property
    def deliveries_per_s(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    @property
    def published_per_s(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


def _raw_post(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _batch_body(topic: str, size: int) -> bytes:
    msgs = [{"topic": topic, "data": {"i": i, "pad": "x" * 40}} for i in range(size)]
    return orjson.dumps({"messages": msgs})


async def _throughput(
    ports: list[int], pids: list[int], redis_pid: int, args: argparse.Namespace, res: Result
) -> None:
    # Two topics. Subscribers of topic j sit on gateway j (mod N); topic j is
    # published through gateway j + 1 (mod N). With two gateways every message
    # crosses pods and each gateway receives only what its own sockets want.
    g = len(ports)
    topics = [f"{TOPIC}{j}" for j in range(2)]
    readers = Subscribers([ports[j % g] for j in range(2)], topics, args.sockets)
    urls = [f"http://127.0.0.1:{ports[(j + 1) % g]}/v1/publish/batch" for j in range(2)]
    bodies = [_batch_body(t, args.batch) for t in topics]
    headers = {"content-type": "application/json"}
    stop = asyncio.Event()
    sent = 0
    calls = 0
    requests = [_raw_post(ports[(j + 1) % g], "/v1/publish/batch", bodies[j]) for j in range(2)]

    async def publisher(j: int) -> None:
        # A keep-alive HTTP/1.1 connection writing one prepared request: far less
        # client CPU per call than an HTTP library, so the gateways get the cores.
        nonlocal sent, calls
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[(j + 1) % g])
        try:
            while not stop.is_set() and calls < args.max_batches:
                calls += 1
                writer.write(requests[j])
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 202"):
                    raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                sent += args.batch
        finally:
            writer.close()

    try:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            # Warm-up: until every socket has something, the subscriptions are live.
            deadline = time.monotonic() + 10
            while readers.count < args.sockets:
                for j in range(2):
                    await client.post(urls[j], content=_batch_body(topics[j], 1), headers=headers)
                await asyncio.sleep(0.05)
                if time.monotonic() > deadline:
                    raise TimeoutError("subscribers got nothing during warm-up")
            tasks = [
                asyncio.create_task(publisher(j)) for j in range(2) for _ in range(args.concurrency)
            ]
            await asyncio.sleep(args.warmup)
            cpu0, rcpu0 = _cpu(pids), _cpu([redis_pid])
            lcpu0 = time.process_time() + _cpu([readers.pid])
            c0, s0, t0 = readers.count, sent, time.perf_counter()
            await asyncio.sleep(args.seconds)
            c1, s1, t1 = readers.count, sent, time.perf_counter()
            cpu1, rcpu1 = _cpu(pids), _cpu([redis_pid])
            lcpu1 = time.process_time() + _cpu([readers.pid])
            stop.set()
            await asyncio.gather(*tasks)
            for port in ports:
                st = (await client.get(f"http://127.0.0.1:{port}/v1/stats")).json()
                res.reconnects += st["backplane"]["reconnects"]
                res.dropped += st["messages_dropped"]
        res.delivered, res.published, res.seconds = c1 - c0, s1 - s0, t1 - t0
        res.gateway_cpu_s = cpu1 - cpu0
        res.redis_cpu_s = rcpu1 - rcpu0
        res.loadgen_cpu_s = lcpu1 - lcpu0
    finally:
        readers.close()


async def _latency(ports: list[int], args: argparse.Namespace, res: Result) -> None:
    url = f"ws://127.0.0.1:{ports[-1]}/ws"
    pub = f"http://127.0.0.1:{ports[0]}/v1/publish"
    async with websockets.connect(url, compression=None, max_size=None) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "id": 1, "topic": LAT_TOPIC}).decode())
        while orjson.loads(await ws.recv()).get("op") != "subscribed":
            pass
        lat: list[float] = []
        warm = True

        async def reader() -> None:
            nonlocal warm
            async for raw in ws:
                now = time.perf_counter()
                frame = orjson.loads(raw)
                for m in frame.get("msgs", ()):
                    warm = False
                    if m["data"]["t"] > 0:
                        lat.append((now - m["data"]["t"]) * 1000)

        task = asyncio.create_task(reader())
        async with httpx.AsyncClient(timeout=10) as client:
            while warm:  # the subscription is live once a probe arrives
                await client.post(pub, json={"topic": LAT_TOPIC, "data": {"t": 0}})
                await asyncio.sleep(0.05)
            interval = 1.0 / args.rate
            n = int(args.rate * args.latency_seconds)
            start = time.perf_counter()
            for i in range(n):
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = {"topic": LAT_TOPIC, "data": {"t": time.perf_counter()}}
                (await client.post(pub, json=body)).raise_for_status()
            deadline = time.monotonic() + 5
            while len(lat) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        res.latencies_ms = lat


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes."""
    return sum(cpu_seconds(pid) for pid in pids)


def run(gateways: int, args: argparse.Namespace) -> Result:
    res = Result(gateways, args.sockets)
    with deployment(gateways) as (pods, redis_pid):
        ports = [port for port, _ in pods]
        pids = [pid for _, pid in pods]
        asyncio.run(_throughput(ports, pids, redis_pid, args, res))
        asyncio.run(_latency(ports, args, res))
    return res


def table(results: list[Result]) -> str:
    base = results[0].deliveries_per_s or 1.0
    rows = [
        "| gateways | sockets | published msg/s | deliveries/s | scaling "
        "| CPU gateways / redis / load | deliveries per gateway CPU-s "
        "| p50 ms | p99 ms | latency samples |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        t = r.seconds or 1.0
        cpu = f"{r.gateway_cpu_s / t:.2f} / {r.redis_cpu_s / t:.2f} / {r.loadgen_cpu_s / t:.2f}"
        rows.append(
            f"| {r.gateways} | {r.sockets} | {r.published_per_s:,.0f} | "
            f"{r.deliveries_per_s:,.0f} | {r.deliveries_per_s / base:.2f}x | "
            f"{cpu} | {r.delivered / (r.gateway_cpu_s or 1.0):,.0f} | "
            f"{r.pct(0.5):.2f} | {r.pct(0.99):.2f} | {len(r.latencies_ms)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sockets", type=int, default=20, help="subscriber sockets in total")
    p.add_argument("--batch", type=int, default=500, help="messages per publish call")
    p.add_argument("--concurrency", type=int, default=8, help="publish calls in flight per topic")
    p.add_argument("--seconds", type=float, default=5.0, help="throughput window")
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--max-batches", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=500.0, help="latency phase publishes/s")
    p.add_argument("--latency-seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=3, help="runs per setup (median kept)")
    p.add_argument("--quick", action="store_true", help="shorter phases, one run each")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.latency_seconds, args.repeat = 3.0, 1.0, 2.0, 1
    # Interleave the setups (1, 2, 1, 2, ...) so a noisy neighbour hits both alike,
    # then keep each setup's median run (by deliveries/s).
    runs: dict[int, list[Result]] = {1: [], 2: []}
    for _ in range(args.repeat):
        for n in (1, 2):
            runs[n].append(run(n, args))
    results = [
        sorted(rs, key=lambda r: r.deliveries_per_s)[(len(rs) - 1) // 2] for rs in runs.values()
    ]
    print(
        f"cross-pod delivery, {os.cpu_count()} CPUs, redis engine; {args.sockets} sockets, "
        f"batches of {args.batch}, {args.concurrency} calls in flight per topic; "
        f"median of {args.repeat} run(s):"
    )
    print(table(results))
    ratio = results[1].deliveries_per_s / (results[0].deliveries_per_s or 1.0)
    print(f"scaling 1 -> 2 gateway processes: {ratio:.2f}x")
    if args.repeat > 1:
        for n, rs in runs.items():
            each = ", ".join(f"{r.deliveries_per_s:,.0f}" for r in rs)
            print(f"  {n} gateway(s), deliveries/s per run: {each}")
    for r in results:
        if r.reconnects or r.dropped:
            print(
                f"note: {r.gateways} gateway(s): {r.reconnects} pub/sub reconnects, "
                f"{r.dropped} deliveries dropped (slow sockets)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

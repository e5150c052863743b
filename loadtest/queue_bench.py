"""Issue 4: queue throughput, send → receive → ack with batching, Herald against its peers.

One run, one redis-server of our own (AOF on, `appendfsync everysec`, no RDB), on loopback:

  herald-redis  Herald's Redis queue store in-process (`open_queue_service(engine="redis")`,
                no HTTP): the figure for the ≥ 10,000 msg/s target
  herald-http   `herald serve --engine redis` in a subprocess, driven with httpx (keep-alive):
                POST …/messages/batch, …/receive {"max":100,"wait":1}, …/ack
  herald-sqlite Herald's embedded store in-process (engine "memory": SQLite WAL, synchronous=FULL)
  rq            RQ on the same Redis: `Queue.enqueue_many` in pipelines of 100, `rq worker`
                SimpleWorker processes running a no-op job
  rabbitmq      the local RabbitMQ through aio-pika: persistent messages on a durable classic
                queue with publisher confirms, consumers with prefetch 100 acking `multiple=True`

For each system, three phases of N messages each:
  (1) send: N messages into an empty queue, batches of 100, nothing consuming;
  (2) receive+ack: drain those N (receive max 100, ack the batch);
  (3) end-to-end: producers and consumers at once on N fresh messages, timed from the first
      send to the last ack.
Every message body carries its index; the consumers count deliveries per index, so each
phase reports losses (never delivered) and duplicates (delivered twice), and the queue is
checked empty afterwards. CPU seconds: this driver, the Herald server / RQ workers, Redis
and RabbitMQ (`/proc/<pid>/task/*/schedstat`).

Run: python -m loadtest.queue_bench [--messages N] [--quick] [--only herald-redis,rq] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loadtest.procs import (
    ROOT,
    RedisServer,
    cpu_seconds,
    free_port,
    spawn,
    stop_all,
    stop_pid,
    wait_port,
)

BATCH = 100
SYSTEMS = ["herald-redis", "herald-http", "herald-sqlite", "rq", "rabbitmq"]
AMQP_URL = os.environ.get("QB_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BIN = Path(sys.executable).parent


NOOP = "loadtest.queue_bench.noop"  # by name: under `python -m` this module is __main__


def noop(i: int) -> None:
    """The RQ job: does nothing (the work is the queueing)."""
    return None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def self_cpu() -> float:
    return time.process_time()


def pid_cpu(pid: int | None) -> float:
    return cpu_seconds(pid) if pid else 0.0


def find_pid(comm: str) -> int | None:
    """A process by its command name (read-only: used for RabbitMQ's CPU time)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "comm").read_text().strip() == comm:
                    return int(d.name)
    return None


class Meter:
    """CPU seconds of named processes over a phase."""

    def __init__(self, pids: dict[str, Callable[[], float]]) -> None:
        self.pids = pids
        self.start = {k: f() for k, f in pids.items()}

    def done(self) -> dict[str, float]:
        return {k: round(f() - self.start[k], 3) for k, f in self.pids.items()}


def check(seen: Counter[int], lo: int, hi: int) -> dict[str, int]:
    missing = sum(1 for i in range(lo, hi) if i not in seen)
    dups = sum(c - 1 for c in seen.values() if c > 1)
    return {"unique": len(seen), "lost": missing, "duplicates": dups}


# ---- Herald (in-process store or HTTP) ----------------------------------------------------


class HeraldInProc:
    def __init__(self, svc: Any, queue: str) -> None:
        self.svc, self.q = svc, queue

    async def send(self, bodies: list[int]) -> int:
        res = await self.svc.send_batch(self.q, [{"body": {"i": i}} for i in bodies])
        return sum(1 for r in res if "id" in r)

    async def receive(self) -> list[tuple[int, str]]:
        msgs = await self.svc.receive(self.q, max=BATCH, wait=1, visibility_timeout=120)
        return [(m["body"]["i"], m["receipt"]) for m in msgs]

    async def ack(self, receipts: list[str]) -> int:
        return sum(1 for r in await self.svc.ack(self.q, receipts) if r.get("ok"))

    async def depth(self) -> tuple[int, int]:
        st = await self.svc.get(self.q)
        return int(st.get("visible", -1)), int(st.get("in_flight", -1))


class HeraldHttp:
    def __init__(self, client: Any, queue: str) -> None:
        self.c, self.q = client, queue

    async def send(self, bodies: list[int]) -> int:
        r = await self.c.post(
            f"/v1/queues/{self.q}/messages/batch",
            json={"entries": [{"body": {"i": i}} for i in bodies]},
        )
        r.raise_for_status()
        return sum(1 for x in r.json()["results"] if "id" in x)

    async def receive(self) -> list[tuple[int, str]]:
        r = await self.c.post(
            f"/v1/queues/{self.q}/receive",
            json={"max": BATCH, "wait": 1, "visibility_timeout": 120},
        )
        r.raise_for_status()
        data = r.json()
        msgs = data["messages"] if isinstance(data, dict) else data
        return [(m["body"]["i"], m["receipt"]) for m in msgs]

    async def ack(self, receipts: list[str]) -> int:
        r = await self.c.post(f"/v1/queues/{self.q}/ack", json={"receipts": receipts})
        r.raise_for_status()
        data = r.json()
        results = data["results"] if isinstance(data, dict) else data
        return sum(1 for x in results if x.get("ok"))

    async def depth(self) -> tuple[int, int]:
        r = await self.c.get(f"/v1/queues/{self.q}")
        st = r.json()
        return int(st.get("visible", -1)), int(st.get("in_flight", -1))


async def produce(client: Any, lo: int, hi: int, conc: int) -> int:
    batches = iter(range(lo, hi, BATCH))
    sent = 0

    async def one() -> None:
        nonlocal sent
        for start in batches:
            # not `sent += await …`: that reads `sent` before awaiting and loses updates
            k = await client.send(list(range(start, min(start + BATCH, hi))))
            sent += k

    await asyncio.gather(*(one() for _ in range(conc)))
    return sent


async def consume(
    client: Any, target: int, conc: int, seen: Counter[int], deadline: float
) -> tuple[int, float]:
    """Receive + ack until `target` acks (or the deadline); (acked, time of the last ack)."""
    acked = 0
    last = time.perf_counter()

    async def one() -> None:
        nonlocal acked, last
        while acked < target and time.perf_counter() < deadline:
            got = await client.receive()
            if not got:
                continue
            for i, _ in got:
                seen[i] += 1
            k = await client.ack([r for _, r in got])
            acked += k
            last = time.perf_counter()

    await asyncio.gather(*(one() for _ in range(conc)))
    return acked, last


async def herald_phases(
    client: Any, n: int, conc: int, meter: Callable[[], Meter]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    limit = max(60.0, n / 200)
    # (1) send only
    m = meter()
    t0 = time.perf_counter()
    sent = await produce(client, 0, n, conc)
    out["send"] = {"n": sent, "s": time.perf_counter() - t0, "cpu": m.done()}
    # (2) receive + ack
    seen: Counter[int] = Counter()
    m = meter()
    t0 = time.perf_counter()
    acked, last = await consume(client, n, conc, seen, t0 + limit)
    out["recv_ack"] = {"n": acked, "s": last - t0, "cpu": m.done(), **check(seen, 0, n)}
    # (3) end to end
    seen = Counter()
    m = meter()
    t0 = time.perf_counter()
    prod = asyncio.create_task(produce(client, n, 2 * n, conc))
    acked, last = await consume(client, n, conc, seen, t0 + limit)
    sent = await prod
    out["e2e"] = {"n": acked, "s": last - t0, "cpu": m.done(), **check(seen, n, 2 * n)}
    out["left"] = await client.depth()
    return out


async def run_herald_inproc(
    engine: str, redis: RedisServer, tmp: Path, n: int, conc: int
) -> dict[str, Any]:
    from fanout.queues import open_queue_service

    q = f"qbench-{uuid.uuid4().hex[:8]}"
    svc = open_queue_service(
        engine=engine, data_dir=tmp, redis_url=redis.url, namespace=f"qb{os.getpid()}"
    )
    await svc.start()
    try:
        await svc.create_or_update(q, {"visibility_timeout": 120})
        pids = {"driver (herald store)": self_cpu}
        if engine == "redis":
            pids["redis-server"] = lambda: pid_cpu(redis.pid)
        res = await herald_phases(HeraldInProc(svc, q), n, conc, lambda: Meter(pids))
        await svc.delete(q)
        return res
    finally:
        await svc.close()


async def run_herald_http(redis: RedisServer, tmp: Path, n: int, conc: int) -> dict[str, Any]:
    import httpx

    port = free_port()
    data = tmp / "http-data"
    data.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    proc = spawn(
        [
            str(BIN / "herald"),
            "serve",
            "--engine",
            "redis",
            "--redis-url",
            redis.url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--log-level",
            "warning",
        ],
        None,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 30, proc)
        q = f"qbench-{uuid.uuid4().hex[:8]}"
        limits = httpx.Limits(max_connections=conc * 2, max_keepalive_connections=conc * 2)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
        ) as c:
            r = await c.put(f"/v1/queues/{q}", json={"visibility_timeout": 120})
            r.raise_for_status()
            pids = {
                "driver (httpx)": self_cpu,
                "herald serve": lambda: pid_cpu(proc.pid),
                "redis-server": lambda: pid_cpu(redis.pid),
            }
            res = await herald_phases(HeraldHttp(c, q), n, conc, lambda: Meter(pids))
            await c.delete(f"/v1/queues/{q}")
        return res
    finally:
        stop_pid(proc)


# ---- RQ -------------------------------------------------------------------------------


def run_rq(redis: RedisServer, n: int, workers: int) -> dict[str, Any]:
    from redis import Redis
    from rq import Queue

    conn = Redis.from_url(redis.url)
    qname = f"qbench-{uuid.uuid4().hex[:8]}"
    q = Queue(qname, connection=conn)
    out: dict[str, Any] = {}

    def enqueue(lo: int, hi: int) -> int:
        for start in range(lo, hi, BATCH):
            datas = [
                Queue.prepare_data(NOOP, (i,), job_id=f"{qname}-{i}", result_ttl=3600)
                for i in range(start, min(start + BATCH, hi))
            ]
            with conn.pipeline() as pipe:
                q.enqueue_many(datas, pipeline=pipe)
                pipe.execute()
        return hi - lo

    def start_workers() -> list[subprocess.Popen[bytes]]:
        procs = [
            spawn(
                [
                    str(BIN / "rq"),
                    "worker",
                    "--url",
                    redis.url,
                    "--worker-class",
                    "rq.worker.SimpleWorker",
                    "--quiet",
                    "--disable-job-desc-logging",
                    "--name",
                    f"{qname}-w{k}",
                    qname,
                ],
                None,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for k in range(workers)
        ]
        return procs

    def wait_done(lo: int, hi: int, deadline: float) -> float:
        """Poll until every job of [lo, hi) is finished; the driver time it was seen."""
        while time.perf_counter() < deadline:
            # finished registry: a sorted set of job ids
            if q.finished_job_registry.count + q.failed_job_registry.count >= hi:
                return time.perf_counter()
            time.sleep(0.01)
        return time.perf_counter()

    def statuses(lo: int, hi: int) -> tuple[Counter[str], float, float]:
        st: Counter[str] = Counter()
        first, last = float("inf"), 0.0
        with conn.pipeline(transaction=False) as pipe:
            for i in range(lo, hi):
                pipe.hmget(f"rq:job:{qname}-{i}", "status", "started_at", "ended_at")
            for status, started, ended in pipe.execute():
                st[(status or b"missing").decode()] += 1
                if started:
                    first = min(first, _ts(started))
                if ended:
                    last = max(last, _ts(ended))
        return st, first, last

    wprocs: list[subprocess.Popen[bytes]] = []
    try:
        base = {"driver (rq producer)": self_cpu, "redis-server": lambda: pid_cpu(redis.pid)}
        # (1) send only
        m = Meter(base)
        t0 = time.perf_counter()
        sent = enqueue(0, n)
        out["send"] = {"n": sent, "s": time.perf_counter() - t0, "cpu": m.done()}
        # (2) workers drain: timed from the first job's start to the last job's end (RQ's
        # own timestamps), so worker start-up is left out; wall time incl. start-up beside.
        m = Meter(base)
        t0 = time.perf_counter()
        wprocs = start_workers()
        wpids = [p.pid for p in wprocs]
        wcpu = {"rq workers": lambda: sum(pid_cpu(p) for p in wpids)}
        m.pids.update(wcpu)
        m.start.update({k: 0.0 for k in wcpu})
        t_end = wait_done(0, n, t0 + max(30.0, n / 100))
        st, first, last = statuses(0, n)
        out["recv_ack"] = {
            "n": st.get("finished", 0),
            "s": last - first,
            "wall_incl_startup": t_end - t0,
            "cpu": m.done(),
            "statuses": dict(st),
            "unique": st.get("finished", 0),
            "lost": n - st.get("finished", 0),
            "duplicates": None,
        }
        # (3) end to end: workers already up and idle, then enqueue n more
        m = Meter({**base, **wcpu})
        t0 = time.perf_counter()
        enqueue(n, 2 * n)
        t_end = wait_done(n, 2 * n, t0 + max(30.0, n / 100))
        st, first, last = statuses(n, 2 * n)
        out["e2e"] = {
            "n": st.get("finished", 0),
            "s": t_end - t0,
            "cpu": m.done(),
            "statuses": dict(st),
            "unique": st.get("finished", 0),
            "lost": n - st.get("finished", 0),
            "duplicates": None,
        }
        out["left"] = (q.count, len(q.started_job_registry))
        out["workers"] = workers
        return out
    finally:
        for p in wprocs:
            stop_pid(p)
        with contextlib.suppress(Exception):
            q.delete(delete_jobs=True)
        conn.close()


def _ts(raw: bytes) -> float:
    s = raw.decode().replace("Z", "+00:00")
    return dt.datetime.fromisoformat(s).timestamp()


# ---- RabbitMQ ------------------------------------------------------------------------------


async def run_rabbit(n: int, conc: int) -> dict[str, Any]:
    import aio_pika

    qname = f"herald-qbench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    beam = find_pid("beam.smp")
    pids = {"driver (aio-pika)": self_cpu}
    if beam:
        pids["rabbitmq (beam.smp)"] = lambda: pid_cpu(beam)
    conn = await aio_pika.connect(AMQP_URL)
    out: dict[str, Any] = {}
    try:
        setup = await conn.channel()
        await setup.declare_queue(qname, durable=True)

        async def produce_rmq(lo: int, hi: int) -> int:
            chans = [await conn.channel(publisher_confirms=True) for _ in range(conc)]
            batches = iter(range(lo, hi, BATCH))
            sent = 0

            async def one(ch: Any) -> None:
                nonlocal sent
                ex = ch.default_exchange
                for start in batches:
                    # a batch: 100 publishes in flight, then wait for all their confirms
                    await asyncio.gather(
                        *(
                            ex.publish(
                                aio_pika.Message(
                                    json.dumps({"i": i}).encode(),
                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                ),
                                routing_key=qname,
                            )
                            for i in range(start, min(start + BATCH, hi))
                        )
                    )
                    sent += min(start + BATCH, hi) - start

            try:
                await asyncio.gather(*(one(ch) for ch in chans))
            finally:
                for ch in chans:
                    await ch.close()
            return sent

        async def consume_rmq(
            target: int, seen: Counter[int], deadline: float
        ) -> tuple[int, float]:
            """`conc` channels, prefetch 100; ack multiple=True every 50 deliveries, and a
            10 ms flusher acks what is left (so the tail does not wait)."""
            acked = 0
            last = time.perf_counter()
            done = asyncio.Event()
            chans = []
            flushers = []
            for _ in range(conc):
                ch = await conn.channel()
                await ch.set_qos(prefetch_count=BATCH)
                q = await ch.get_queue(qname)
                state: dict[str, Any] = {"pending": 0, "last": None}

                async def ack_now(state: dict[str, Any] = state) -> None:
                    nonlocal acked, last
                    msg, k = state["last"], state["pending"]
                    if msg is None or k == 0:
                        return
                    state["pending"], state["last"] = 0, None
                    await msg.ack(multiple=True)
                    acked += k
                    last = time.perf_counter()
                    if acked >= target:
                        done.set()

                async def on_msg(
                    msg: Any,
                    state: dict[str, Any] = state,
                    ack_now: Callable[[], Awaitable[None]] = ack_now,
                ) -> None:
                    seen[json.loads(msg.body)["i"]] += 1
                    state["pending"] += 1
                    state["last"] = msg
                    if state["pending"] >= BATCH // 2:
                        await ack_now()

                async def flusher(ack_now: Callable[[], Awaitable[None]] = ack_now) -> None:
                    while not done.is_set():
                        await asyncio.sleep(0.01)
                        await ack_now()

                await q.consume(on_msg)
                chans.append(ch)
                flushers.append(asyncio.create_task(flusher()))
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), max(1.0, deadline - time.perf_counter()))
            finally:
                done.set()
                for f in flushers:
                    with contextlib.suppress(asyncio.CancelledError):
                        await f
                for ch in chans:
                    await ch.close()
            return acked, last

        limit = max(60.0, n / 200)
        m = Meter(pids)
        t0 = time.perf_counter()
        sent = await produce_rmq(0, n)
        out["send"] = {"n": sent, "s": time.perf_counter() - t0, "cpu": m.done()}
        seen: Counter[int] = Counter()
        m = Meter(pids)
        t0 = time.perf_counter()
        acked, last = await consume_rmq(n, seen, t0 + limit)
        out["recv_ack"] = {"n": acked, "s": last - t0, "cpu": m.done(), **check(seen, 0, n)}
        seen = Counter()
        m = Meter(pids)
        t0 = time.perf_counter()
        prod = asyncio.create_task(produce_rmq(n, 2 * n))
        acked, last = await consume_rmq(n, seen, t0 + limit)
        await prod
        out["e2e"] = {"n": acked, "s": last - t0, "cpu": m.done(), **check(seen, n, 2 * n)}
        # consumer channels are closed: anything unacked would be ready again
        q = await setup.declare_queue(qname, durable=True, passive=True)
        out["left"] = (q.declaration_result.message_count, 0)
        return out
    finally:
        with contextlib.suppress(Exception):
            ch = await conn.channel()
            await ch.queue_delete(qname)
        await conn.close()


# ---- Redis of our own ------------------------------------------------------------------------


def start_redis(tmp: Path) -> RedisServer:
    """Our own Redis: AOF on, fsync every second, no eviction (as a queue store wants)."""
    args = ("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction")
    return RedisServer(args=args, dir=tmp / "redis").start()


def flush(redis: RedisServer) -> None:
    from redis import Redis

    r = Redis.from_url(redis.url)
    r.flushall()
    r.close()


# ---- driver ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    import uvloop

    only = [s for s in (args.only.split(",") if args.only else SYSTEMS) if s]
    n = args.messages
    n_rq = args.rq_messages
    tmp = Path(tempfile.mkdtemp(prefix="qbench-"))
    result: dict[str, Any] = {
        "command": "python -m loadtest.queue_bench " + " ".join(sys.argv[1:]),
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "loadavg_start": os.getloadavg(),
        "messages": n,
        "rq_messages": n_rq,
        "concurrency": args.concurrency,
        "systems": {},
    }
    redis = start_redis(tmp)
    try:
        for name in only:
            log(f"{name} ...")
            t = time.perf_counter()
            try:
                if name == "herald-redis":
                    r = uvloop.run(run_herald_inproc("redis", redis, tmp, n, args.concurrency))
                elif name == "herald-sqlite":
                    r = uvloop.run(run_herald_inproc("memory", redis, tmp, n, args.concurrency))
                elif name == "herald-http":
                    r = uvloop.run(run_herald_http(redis, tmp, n, args.concurrency))
                elif name == "rq":
                    r = run_rq(redis, n_rq, args.rq_workers)
                elif name == "rabbitmq":
                    r = uvloop.run(run_rabbit(n, args.concurrency))
                else:
                    raise ValueError(f"unknown system {name}")
            except Exception as exc:
                log(f"{name} failed: {exc!r}")
                r = {"error": repr(exc)}
            r["took_s"] = round(time.perf_counter() - t, 1)
            result["systems"][name] = r
            log(f"{name}: {summary(r)}")
            flush(redis)
    finally:
        redis.stop()
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    return result


def rate(p: dict[str, Any]) -> float:
    return p["n"] / p["s"] if p.get("s") else 0.0


def summary(r: dict[str, Any]) -> str:
    if "error" in r:
        return r["error"]
    return ", ".join(f"{k} {rate(r[k]):,.0f}/s" for k in ("send", "recv_ack", "e2e"))


def cpu_text(cpu: dict[str, float]) -> str:
    return "; ".join(f"{k} {v:.2f}" for k, v in cpu.items())


def markdown(res: dict[str, Any]) -> str:
    la0 = " ".join(f"{x:.2f}" for x in res["loadavg_start"])
    la1 = " ".join(f"{x:.2f}" for x in res["loadavg_end"])
    lines = [
        f"Command: `{res['command']}` — {res['started']} — {res['machine']}; "
        f"load average {la0} at start, {la1} at end. N = {res['messages']:,} messages per "
        f"phase (RQ: {res['rq_messages']:,}), {res['concurrency']} producer and "
        f"{res['concurrency']} consumer tasks.",
        "",
        "| system | phase | msgs | s | **msgs/s** | lost | dup | CPU s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in res["systems"].items():
        if "error" in r:
            lines.append(f"| {name} | — | | | failed: {r['error']} | | | |")
            continue
        for ph, label in (("send", "send"), ("recv_ack", "receive+ack"), ("e2e", "end-to-end")):
            p = r[ph]
            lost = p.get("lost", "")
            dup = "n/a" if p.get("duplicates", 0) is None else p.get("duplicates", "")
            lines.append(
                f"| {name} | {label} | {p['n']:,} | {p['s']:.2f} | **{rate(p):,.0f}** | "
                f"{lost} | {dup} | {cpu_text(p['cpu'])} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--messages", type=int, default=None, help="per phase (default 50000; quick 10000)"
    )
    ap.add_argument(
        "--rq-messages",
        type=int,
        default=None,
        help="RQ runs a few hundred jobs/s: per phase (default max(1000, messages/10))",
    )
    ap.add_argument("--rq-workers", type=int, default=2, help="RQ SimpleWorker processes")
    ap.add_argument("--concurrency", type=int, default=4, help="producer and consumer tasks")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help=",".join(SYSTEMS))
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--max-seconds", type=int, default=600, help="hard stop for the whole run")
    a = ap.parse_args(argv)
    if a.messages is None:
        a.messages = 10_000 if a.quick else 50_000
    if a.rq_messages is None:
        a.rq_messages = max(1000, a.messages // 10)
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_alarm(signum: int, frame: Any) -> None:
        # Stop our children here: inside an event loop a plain exception raised from a
        # signal handler can be swallowed as a failed callback; SystemExit is not.
        stop_all()
        raise SystemExit(f"queue_bench exceeded --max-seconds {args.max_seconds}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.max_seconds)
    try:
        res = run(args)
    finally:
        signal.alarm(0)
        stop_all()
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())

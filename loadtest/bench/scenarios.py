"""The scenarios of the peer benchmark, (a) to (e), and the scale each runs at."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtest.bench.load import Subs, publish, sources_for, wait_delivery
from loadtest.bench.servers import Srv
from loadtest.procs import RedisServer, cpu_seconds, log, machine_busy_seconds

FD_HEADROOM = 400


@dataclass
class Scale:
    """How large each scenario runs: the full run's sizes; `QUICK` overrides some."""

    quick: bool = False
    cap_subs: list[int] = field(default_factory=lambda: [2000, 10000])
    cap_msgs: dict[int, int] = field(default_factory=lambda: {2000: 40, 10000: 20})
    cap_rate: dict[int, float] = field(default_factory=lambda: {2000: 25.0, 10000: 5.0})
    lat_subs: int = 10000
    lat_topics: int = 100
    lat_rate: float = 1000.0
    lat_seconds: float = 10.0
    rss_conns: int = 20_000
    batch_subs: int = 1000
    batch_topics: int = 10
    batch_seconds: float = 5.0
    scale_max: int = 60_000
    scale_seconds: float = 120.0
    phase_timeout: float = 60.0
    budget_s: float = 1140.0


QUICK: dict[str, Any] = {
    "quick": True,
    "cap_subs": [2000],
    "cap_msgs": {2000: 20},
    "cap_rate": {2000: 20.0},
    "lat_subs": 2000,
    "lat_topics": 20,
    "lat_rate": 200.0,
    "lat_seconds": 4.0,
    "rss_conns": 2000,
    "batch_subs": 200,
    "batch_topics": 4,
    "batch_seconds": 3.0,
    "scale_max": 10_000,
    "scale_seconds": 30.0,
    "phase_timeout": 25.0,
    "budget_s": 270.0,
}


def make_scale(quick: bool, fd_limit: int) -> Scale:
    """The run's scale, with the connection counts capped by the fd limit."""
    sc = Scale(**QUICK) if quick else Scale()
    cap = fd_limit - FD_HEADROOM
    return dataclasses.replace(
        sc, rss_conns=min(sc.rss_conns, cap), scale_max=min(sc.scale_max, cap)
    )


def capacity(
    srv: Srv, subs: Subs, n: int, msgs: int, rate: float, timeout: float, redis: RedisServer | None
) -> dict[str, Any]:
    subs.broadcast("reset")
    c0, r0, t0 = srv.cpu(), cpu_seconds(redis.pid) if redis else 0.0, time.monotonic()
    pub = publish(srv, 1, rate, msgs, timeout)
    want = n * pub["sent"]
    st = wait_delivery(subs, want, timeout)
    c1, r1, t1 = srv.cpu(), cpu_seconds(redis.pid) if redis else 0.0, time.monotonic()
    cpu = c1 - c0
    got = st["msgs"]
    return {
        "subs": n,
        "sent": pub["sent"],
        "delivered": got,
        "ratio": got / want if want else 0,
        "cpu_s": round(cpu, 4),
        "wall_s": round(t1 - t0, 2),
        "us_per_msg": cpu / got * 1e6 if got else None,
        "deliveries_per_cpu_s": got / cpu if cpu else None,
        "frame_bytes": st["bytes"] / st["frames"] if st["frames"] else None,
        "redis_cpu_s": round(r1 - r0, 4) if redis else None,
        "client_cpu_s": st["cpu_s"],
    }


def latency(srv: Srv, sc: Scale, sources: list[str], pub_kind: str | None = None) -> dict[str, Any]:
    subs = Subs(srv, sources)
    try:
        c = subs.connect(sc.lat_subs, topics=sc.lat_topics, probe_every=10, max_seconds=150)
        if c["open"] < sc.lat_subs:
            return {"error": f"only {c['open']} of {sc.lat_subs} connected: {c}"}
        # warm-up: one message per topic (first-use costs, JITs), then the measured run
        publish(srv, sc.lat_topics, sc.lat_rate, sc.lat_topics * 2, 30, pub_kind)
        time.sleep(1.0)
        subs.broadcast("reset")
        count = int(sc.lat_rate * sc.lat_seconds)
        k0 = subs.stats()["cpu_s"]
        m0 = machine_busy_seconds()
        c0, t0 = srv.cpu(), time.monotonic()
        pub = publish(srv, sc.lat_topics, sc.lat_rate, count, sc.lat_seconds * 3 + 10, pub_kind)
        want = pub["sent"] * (sc.lat_subs // sc.lat_topics)
        st = wait_delivery(subs, want, 10.0, stall=2.0)
        cpu, wall = srv.cpu() - c0, time.monotonic() - t0
        # The subscribers share core 1 with the publisher: near 100 % the latency is the
        # load generator's own queueing, not the server's.
        client_pct = round((st["cpu_s"] - k0) / wall * 100, 1)
        # Everything else the machine ran meanwhile (other users' processes, the publisher,
        # this driver), in % of one core. Approximate: /proc/stat is tick-based and
        # undercounts softirq time in this VM (can go negative); JSON only, not tabled.
        other = (machine_busy_seconds() - m0) - cpu - (st["cpu_s"] - k0)
        other_pct = round(other / wall * 100, 1)
        lat = subs.latency()
        return {
            "subs": sc.lat_subs,
            "topics": sc.lat_topics,
            "rate": sc.lat_rate,
            "achieved_rate": round(pub.get("rate", 0), 1),
            "sent": pub["sent"],
            "delivered": st["msgs"],
            "delivery_ratio": st["msgs"] / want if want else 0,
            "server_cpu_pct": round(cpu / wall * 100, 1),
            "wall_s": round(wall, 2),
            "client_cpu_pct": client_pct,
            "other_cpu_pct_approx": other_pct,
            **lat,
        }
    finally:
        subs.stop()


def latency_sweep(make: Callable[[], Srv], sc: Scale, rates: list[float]) -> list[dict[str, Any]]:
    """Herald, scenario (b) at several total rates, each on a fresh server: shows where the
    load generator (one core, Python) rather than the server sets the latency."""
    out = []
    for rate in rates:
        srv = make()
        try:
            one = Scale(**{**sc.__dict__, "lat_rate": rate})
            r = latency(srv, one, sources_for(sc.lat_subs))
            out.append(r)
            log(f"latency sweep {rate:g}/s: {r}")
        finally:
            srv.stop()
    return out


def run_system(make: Callable[[], Srv], sc: Scale, redis: RedisServer | None) -> dict[str, Any]:
    srv = make()
    res: dict[str, Any] = {"name": srv.name, "label": srv.label, "cap": [], "notes": []}
    subs = None
    try:
        time.sleep(1.0)
        rss0 = srv.rss()
        sources = sources_for(max([*sc.cap_subs, sc.lat_subs]))
        subs = Subs(srv, sources)
        have = 0
        for n in sc.cap_subs:
            c = subs.connect(n - have, max_seconds=150)
            have += c["open"]
            log(f"{srv.name}: {have} subscribed ({c['s']} s) {c['errors'] or ''}")
            if c["open"] < n - have + c["open"] or have < n:
                res["notes"].append(f"only {have} of {n} connected: {c['errors']} {c['samples']}")
                break
            time.sleep(1.0)
            rss = srv.rss()
            res.setdefault("rss", []).append(
                {
                    "conns": have,
                    "rss0_kib": rss0,
                    "rss_kib": rss,
                    "kib_per_conn": (rss - rss0) / have,
                }
            )
            # warm-up, then the measured phase
            capacity(srv, subs, n, 2, sc.cap_rate[n], sc.phase_timeout, redis)
            cap = capacity(srv, subs, n, sc.cap_msgs[n], sc.cap_rate[n], sc.phase_timeout, redis)
            res["cap"].append(cap)
            usm = cap["us_per_msg"]
            log(
                f"{srv.name}: capacity {n}: {usm and round(usm, 2)} µs/msg, "
                f"delivered {cap['ratio']:.3f}, wall {cap['wall_s']} s"
            )
            if not srv.alive():
                res["notes"].append("server died")
                break
        subs.stop()
        subs = None
        if srv.name != "floor" and srv.alive():
            time.sleep(0.5)
            res["lat"] = latency(srv, sc, sources)
            log(f"{srv.name}: latency {res['lat']}")
    except Exception as exc:  # one peer failing must not lose the others
        res["notes"].append(f"error: {type(exc).__name__}: {exc}")
        log(f"{srv.name}: ERROR {exc!r}")
        if srv.proc.stderr is not None and not srv.alive():
            res["notes"].append(srv.proc.stderr.read()[-300:].decode(errors="replace"))
    finally:
        if subs is not None:
            subs.stop()
        srv.stop()
    return res


def idle_rss(make: Callable[[], Srv], n: int) -> dict[str, Any]:
    """Fresh server, n idle subscribed sockets, RSS delta / n."""
    srv = make()
    subs = Subs(srv, sources_for(n))
    try:
        time.sleep(1.0)
        rss0 = srv.rss()
        c = subs.connect(n, max_seconds=150)
        time.sleep(2.0)
        rss = srv.rss()
        have = c["open"]
        return {
            "name": srv.name,
            "conns": have,
            "rss0_kib": rss0,
            "rss_kib": rss,
            "kib_per_conn": (rss - rss0) / have if have else None,
            "connect_s": c["s"],
            "errors": c["errors"],
        }
    finally:
        subs.stop()
        srv.stop()


def batching(make: Callable[[], Srv], sc: Scale) -> list[dict[str, Any]]:
    """Herald: same subscribers and publish rate, batch_ms 0 vs 100 (frames and bytes)."""
    out = []
    for batch in (0, 100):
        srv = make()
        subs = Subs(srv, sources_for(sc.batch_subs), batch_ms=batch)
        try:
            c = subs.connect(sc.batch_subs, topics=sc.batch_topics, probe_every=10)
            subs.broadcast("reset")
            rate = 50.0 * sc.batch_topics
            pub = publish(srv, sc.batch_topics, rate, int(rate * sc.batch_seconds), 60)
            want = pub["sent"] * (sc.batch_subs // sc.batch_topics)
            c0 = srv.cpu()
            st = wait_delivery(subs, want, 10, stall=2.0)
            lat = subs.latency()
            out.append(
                {
                    "batch_ms": batch,
                    "subs": c["open"],
                    "topics": sc.batch_topics,
                    "msgs_per_s_per_topic": 50,
                    "sent": pub["sent"],
                    "delivered": st["msgs"],
                    "frames": st["frames"],
                    "bytes": st["bytes"],
                    "frames_per_sub_s": st["frames"] / c["open"] / sc.batch_seconds,
                    "bytes_per_msg": st["bytes"] / st["msgs"] if st["msgs"] else None,
                    "p50_ms": lat.get("p50_ms"),
                    "p99_ms": lat.get("p99_ms"),
                    "tail_cpu_s": srv.cpu() - c0,
                }
            )
            log(f"batching {batch}: {out[-1]}")
        finally:
            subs.stop()
            srv.stop()
    return out


def conn_scale(make: Callable[[], Srv], sc: Scale, limit: int | None = None) -> dict[str, Any]:
    """Open Herald connections in steps until a failure, the limit, or sc.scale_seconds."""
    if limit is not None:
        sc = dataclasses.replace(sc, scale_max=limit)
    srv = make()
    subs = Subs(srv, sources_for(sc.scale_max, per=6000))
    step = 2000
    t0 = time.monotonic()
    have = 0
    errors: dict[str, int] = {}
    steps = []
    try:
        time.sleep(1.0)
        rss0 = srv.rss()
        while have < sc.scale_max and time.monotonic() - t0 < sc.scale_seconds:
            k = min(step, sc.scale_max - have)
            c = subs.connect(
                k, max_seconds=max(2.0, sc.scale_seconds - (time.monotonic() - t0)), concurrency=256
            )
            have += c["open"]
            steps.append(
                {
                    "t_s": round(time.monotonic() - t0, 1),
                    "conns": have,
                    "rss_mib": round(srv.rss() / 1024, 1),
                }
            )
            if c["failed"] or c["open"] < k:
                errors = c["errors"] or {"short": k - c["open"]}
                break
        st = subs.stats()
        return {
            "conns": have,
            "alive": st["subscribed"],
            "seconds": round(time.monotonic() - t0, 1),
            "limit": sc.scale_max,
            "stopped_by": "errors" if errors else ("limit" if have >= sc.scale_max else "time"),
            "errors": errors,
            "rss_mib": round(srv.rss() / 1024, 1),
            "rss0_mib": round(rss0 / 1024, 1),
            "steps": steps,
        }
    finally:
        subs.stop()
        srv.stop()

"""What costly filters do to the publish rate, and what the filter-cost bound keeps.

One WebSocket connection tries `--subscriptions` subscriptions on one topic, each with
a different 150-branch `$or` of `prefix` matches (the most a filter may have, of the
slowest operator); then HTTP batches are published to that topic for `--seconds`.
Reported: subscriptions accepted, refusal codes, publish rate, /healthz latency.

    python -m loadtest.filter_cost [--subscriptions 1000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from loadtest.procs import bench_herald


def costly(i: int) -> dict[str, Any]:
    return {"$or": [{"k": [{"prefix": f"p{i}-{j}"}]} for j in range(150)]}


async def measure(http: str, ws_url: str, n: int, seconds: float) -> str:
    async with websockets.connect(ws_url, max_queue=None, compression=None) as ws:
        for i in range(n):
            cmd = {"op": "subscribe", "id": i, "topic": "t.x", "filter": costly(i)}
            await ws.send(json.dumps(cmd))
        replies = [json.loads(await asyncio.wait_for(ws.recv(), 60)) for _ in range(n)]
        accepted = sum(r["op"] == "subscribed" for r in replies)
        codes = sorted({r.get("code", "") for r in replies if r["op"] == "error"})
        entry = {"topic": "t.x", "data": 1, "attributes": {"k": "no-match"}}
        body = {"messages": [entry] * 100}
        async with httpx.AsyncClient(timeout=120) as c:
            sent, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < seconds:
                (await c.post(http + "/v1/publish/batch", json=body)).raise_for_status()
                sent += 100
            rate = sent / (time.monotonic() - t0)
            t1 = time.monotonic()
            await c.get(http + "/healthz")
            healthz_ms = (time.monotonic() - t1) * 1000
    return (
        f"subscriptions tried {n}, accepted {accepted}, refused {codes or '-'}; "
        f"publish {rate:,.0f} msg/s; /healthz {healthz_ms:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    env = {"HERALD_MAX_SUBSCRIPTIONS_PER_CONNECTION": str(max(1000, args.subscriptions))}
    server = bench_herald(None, Path(tempfile.mkdtemp(prefix="herald-fcost-")), env=env)
    try:
        print(asyncio.run(measure(server.http, server.ws, args.subscriptions, args.seconds)))
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""Peer 3: a `websockets` (asyncio implementation) server fanning out with
`websockets.broadcast()` to a set of connections per topic.

Run: python -m loadtest.peers.ws_broadcast --port P
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

topics: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    mine: list[str] = []
    try:
        async for raw in ws:
            msg: dict[str, Any] = json.loads(raw)
            op = msg.get("op")
            if op == "subscribe":
                t = msg["topic"]
                topics.setdefault(t, set()).add(ws)
                mine.append(t)
                await ws.send(f'{{"op":"subscribed","topic":{json.dumps(t)}}}')
            elif op == "publish":
                t = msg["topic"]
                out = json.dumps({"topic": t, "data": msg.get("data")}, separators=(",", ":"))
                broadcast(topics.get(t, ()), out)
    finally:
        for t in mine:
            topics.get(t, set()).discard(ws)


async def main_async(host: str, port: int) -> None:
    async with serve(
        handler,
        host,
        port,
        compression=None,
        ping_interval=None,
        max_queue=64,
        backlog=4096,
    ) as server:
        await server.serve_forever()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    uvloop.run(main_async(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

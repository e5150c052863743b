"""Peer 6: python-socketio `AsyncServer` with `AsyncRedisManager`, as an ASGI app under
uvicorn. `subscribe` joins a room, `publish` emits `msg` to the room (through Redis).

Run: BENCH_REDIS_URL=redis://127.0.0.1:R/0 python -m loadtest.peers.socketio_app --port P
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import socketio
import uvicorn

mgr = socketio.AsyncRedisManager(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=mgr,
    ping_interval=3600,
    ping_timeout=600,
    transports=["websocket"],
    cors_allowed_origins="*",
)
app = socketio.ASGIApp(sio)


@sio.on("subscribe")
async def subscribe(sid: str, topic: str) -> None:
    await sio.enter_room(sid, topic)
    await sio.emit("subscribed", topic, to=sid)


@sio.on("publish")
async def publish(sid: str, msg: dict[str, Any]) -> None:
    await sio.emit("msg", msg, room=msg["topic"])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        backlog=4096,
        loop="uvloop",
        http="httptools",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Peer 6: python-socketio `AsyncServer` with `AsyncRedisManager`, as an ASGI app under
uvicorn. `subscribe` joins a room, `publish` emits `msg` to the room (through Redis).

Run: BENCH_REDIS_URL=redis://127.0.0.1:R/0 python -m loadtest.peers.socketio_app --port P
"""

from __future__ import annotations

import os
from typing import Any

import socketio

from loadtest.peers import serve_asgi

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
    return serve_asgi(app)


if __name__ == "__main__":
    raise SystemExit(main())

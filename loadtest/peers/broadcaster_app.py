"""Peer 5: encode/broadcaster on Redis with FastAPI, the pattern of broadcaster's README
(one `broadcast.subscribe(channel)` per WebSocket, a reader task and a sender task).

Run: python -m loadtest.peers.broadcaster_app --port P --redis redis://127.0.0.1:R/0
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator

from broadcaster import Broadcast
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from loadtest.peers import serve_asgi

broadcast = Broadcast(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await broadcast.connect()
    # broadcaster 0.3.1's Redis listener runs `pubsub.listen()` as soon as the first
    # subscribe() sets its ready flag; if that happens before redis-py records the
    # SUBSCRIBE, listen() returns at once, the flag is cleared and the channel is never
    # read again (the capacity run then got 0 messages). Keep one permanent subscription
    # and re-arm the flag once after it is recorded, so the listener stays up.
    warm = asyncio.Event()

    async def hold() -> None:
        async with broadcast.subscribe(channel="bench.__warm__"):
            warm.set()
            await asyncio.Event().wait()

    holder = asyncio.create_task(hold())
    await warm.wait()
    await asyncio.sleep(0.2)
    async with broadcast.subscribe(channel="bench.__warm2__"):
        await asyncio.sleep(0.2)
    try:
        yield
    finally:
        holder.cancel()
        await broadcast.disconnect()


app = FastAPI(lifespan=lifespan)


async def sender(websocket: WebSocket, topic: str, ready: asyncio.Event) -> None:
    async with broadcast.subscribe(channel=topic) as subscriber:
        ready.set()
        async for event in subscriber:  # type: ignore[union-attr]
            await websocket.send_text(event.message)


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    tasks: list[asyncio.Task[None]] = []
    try:
        while True:
            msg = json.loads(await websocket.receive_text())
            if msg.get("op") == "subscribe":
                ready = asyncio.Event()
                tasks.append(asyncio.create_task(sender(websocket, msg["topic"], ready)))
                await ready.wait()
                await websocket.send_text(
                    '{{"op":"subscribed","topic":{}}}'.format(json.dumps(msg["topic"]))
                )
            elif msg.get("op") == "publish":
                out = json.dumps(
                    {"topic": msg["topic"], "data": msg.get("data")}, separators=(",", ":")
                )
                await broadcast.publish(channel=msg["topic"], message=out)
    except WebSocketDisconnect:
        pass
    finally:
        for t in tasks:
            t.cancel()


def main() -> int:
    return serve_asgi(app)


if __name__ == "__main__":
    raise SystemExit(main())

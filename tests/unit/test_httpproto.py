"""HeraldHttp in-process: its request-head timer does not outlive a WebSocket upgrade."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import uvicorn
import websockets
from uvicorn.server import ServerState

from gateway.httpproto import HeraldHttp


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message.get("text", "")})


async def test_upgrade_drops_the_header_timer() -> None:
    config = uvicorn.Config(_echo, ws="websockets-sansio", lifespan="off", log_level="warning")
    config.load()
    # Only what HeraldHttp reads of the node: the head deadline and the socket cap.
    settings = SimpleNamespace(handshake_timeout=30.0, max_connections=100)
    app_state = {"edge": SimpleNamespace(node=SimpleNamespace(settings=settings))}
    state = ServerState()
    made: list[HeraldHttp] = []

    def factory() -> HeraldHttp:
        proto = HeraldHttp(config=config, server_state=state, app_state=app_state)
        made.append(proto)
        return proto

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
            (proto,) = made
            # Before the fix the timer stayed armed for the whole deadline, holding
            # the finished HTTP protocol and its buffers in memory.
            assert proto._header_timer is None
    finally:
        server.close()
        await server.wait_closed()


async def test_plain_request_keeps_its_deadline_armed_until_the_head_ends() -> None:
    config = uvicorn.Config(_echo, lifespan="off", log_level="warning")
    config.load()
    settings = SimpleNamespace(handshake_timeout=30.0, max_connections=100)
    app_state = {"edge": SimpleNamespace(node=SimpleNamespace(settings=settings))}
    made: list[HeraldHttp] = []

    def factory() -> HeraldHttp:
        proto = HeraldHttp(config=config, server_state=ServerState(), app_state=app_state)
        made.append(proto)
        return proto

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a head
        await writer.drain()
        for _ in range(100):
            if made and made[0]._head_since is not None:
                break
            await asyncio.sleep(0.01)
        (proto,) = made
        assert proto._header_timer is not None  # the deadline is armed
        writer.close()
    finally:
        server.close()
        await server.wait_closed()

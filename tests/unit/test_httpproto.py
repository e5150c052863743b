"""HeraldHttp in-process: its request-head timer does not outlive a WebSocket upgrade."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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


@contextlib.asynccontextmanager
async def _serve() -> AsyncIterator[tuple[int, list[HeraldHttp]]]:
    """A server of HeraldHttp protocols on a free port: (port, the protocols made)."""
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

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], made
    finally:
        server.close()
        await server.wait_closed()


async def test_upgrade_drops_the_header_timer() -> None:
    async with _serve() as (port, made), websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
        (proto,) = made
        # Before the fix the timer stayed armed for the whole deadline, holding
        # the finished HTTP protocol and its buffers in memory.
        assert proto._header_timer is None


async def test_a_head_in_progress_keeps_its_deadline() -> None:
    async with _serve() as (port, made):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a head
        await writer.drain()
        for _ in range(100):
            if made and made[0]._head_since is not None:
                break
            await asyncio.sleep(0.01)
        (proto,) = made
        assert proto._header_timer is not None  # the deadline is armed
        writer.close()

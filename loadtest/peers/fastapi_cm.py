"""Peer 4: the FastAPI docs' `ConnectionManager` recipe ("Handling disconnections and
multiple clients"), one list of sockets per topic, `await ws.send_text()` in a loop.
Served by uvicorn (uvloop, httptools, default WebSocket implementation).

Run: python -m loadtest.peers.fastapi_cm --port P
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: dict[str, list[WebSocket]] = {}

    def subscribe(self, topic: str, websocket: WebSocket) -> None:
        self.active_connections.setdefault(topic, []).append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        for conns in self.active_connections.values():
            if websocket in conns:
                conns.remove(websocket)

    async def broadcast(self, topic: str, message: str) -> None:
        for connection in list(self.active_connections.get(topic, ())):
            await connection.send_text(message)


manager = ConnectionManager()
app = FastAPI()


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            msg = json.loads(await websocket.receive_text())
            if msg.get("op") == "subscribe":
                manager.subscribe(msg["topic"], websocket)
                await websocket.send_text(
                    '{{"op":"subscribed","topic":{}}}'.format(json.dumps(msg["topic"]))
                )
            elif msg.get("op") == "publish":
                out = json.dumps(
                    {"topic": msg["topic"], "data": msg.get("data")}, separators=(",", ":")
                )
                await manager.broadcast(msg["topic"], out)
    except WebSocketDisconnect:
        manager.disconnect(websocket)


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

"""Peer 4: the FastAPI docs' `ConnectionManager` recipe ("Handling disconnections and
multiple clients"), one list of sockets per topic, `await ws.send_text()` in a loop.
Served by uvicorn (uvloop, httptools, default WebSocket implementation).

Run: python -m loadtest.peers.fastapi_cm --port P
"""

from __future__ import annotations

import json

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from loadtest.peers import serve_asgi


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
    return serve_asgi(app)


if __name__ == "__main__":
    raise SystemExit(main())

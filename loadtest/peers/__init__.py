"""Peer servers for issue 5's benchmark (`loadtest/bench.py`); each is started pinned
to the server core and stopped by PID. They speak the same tiny dialect as Herald's
WebSocket protocol where they can: `{"op":"subscribe","topic":T}` -> `{"op":"subscribed"}`,
`{"op":"publish","topic":T,"data":D}` -> every subscriber of T gets `{"topic":T,"data":D}`."""

from __future__ import annotations

import argparse
from typing import Any


def serve_asgi(app: Any) -> int:
    """Run an ASGI peer under uvicorn as every Python peer is measured: uvloop,
    httptools, no keep-alive pings in the window, no permessage-deflate."""
    import uvicorn

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

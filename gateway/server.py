"""Run uvicorn with Herald's WebSocket protocol and the FastAPI app."""

from __future__ import annotations

import logging
import os
from typing import Any

import uvicorn

from gateway.app import create_asgi_app
from gateway.httpproto import HeraldHttp
from gateway.wsproto import HeraldWebSocket
from shared.config import Settings


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    return dict(
        host=settings.host,
        port=settings.port,
        ws=HeraldWebSocket,
        loop="uvloop",
        # httptools plus a request-head deadline and a cap on all open sockets.
        http=HeraldHttp,
        lifespan="on",
        log_level=settings.log_level,
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
        # Herald's own keep-alive wheel pings WebSockets; uvicorn's settings only
        # apply to its built-in protocols.
    )


def build_config(settings: Settings) -> uvicorn.Config:
    """uvicorn settings: Herald's `http=` and `ws=` classes, uvloop, bounded drain."""
    return uvicorn.Config(create_asgi_app(settings), **_uvicorn_options(settings))


def run(overrides: dict[str, Any]) -> None:
    """Start a gateway process (blocks until it is stopped)."""
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.workers == 1:
        uvicorn.Server(build_config(settings)).run()
        return
    if settings.engine != "redis":
        # Workers share nothing but the listening socket: only the Redis backplane
        # lets a publish on one worker reach subscribers on another.
        raise SystemExit("HERALD_WORKERS > 1 needs HERALD_ENGINE=redis")
    # Each worker is a fresh process that builds its own app from HERALD_* variables.
    for name, value in overrides.items():
        os.environ[f"HERALD_{name.upper()}"] = str(value)
    uvicorn.run(
        "gateway.app:create_asgi_app",
        factory=True,
        workers=settings.workers,
        **_uvicorn_options(settings),
    )

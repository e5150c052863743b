"""Run uvicorn with Herald's WebSocket protocol and the FastAPI app."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.wsproto import HeraldWebSocket
from shared.config import Settings


def build_config(settings: Settings) -> uvicorn.Config:
    """uvicorn settings: Herald's `ws=` class, uvloop, httptools, bounded drain."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws=HeraldWebSocket,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level=settings.log_level,
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
        # Herald's own keep-alive wheel pings WebSockets; uvicorn's settings only
        # apply to its built-in protocols.
    )


def run(overrides: dict[str, Any]) -> None:
    """Start a gateway process (blocks until it is stopped)."""
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.Server(build_config(settings)).run()

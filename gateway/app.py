"""The FastAPI application: lifespan (engine start/stop), error mapping, routers."""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fanout.backplane import Backplane
from fanout.node import Node
from gateway.client_js import router as client_js_router
from gateway.commands import HANDLERS
from gateway.edge import Edge
from gateway.fastpath import PublishFastPath
from gateway.http_api import router
from gateway.responses import JSONBytes
from shared.config import Settings
from shared.errors import HeraldError, PayloadTooLarge, RateLimited
from shared.jsonvalue import json_safe

log = logging.getLogger("herald")


def make_backplane(settings: Settings) -> Backplane:
    """The engine's backplane, chosen at start-up (SPEC §6)."""
    if settings.engine == "redis":
        from fanout.redis.backplane import RedisBackplane

        return RedisBackplane(settings.backplane_url or settings.redis_url)
    from fanout.memory import MemoryBackplane

    return MemoryBackplane()


def make_queues(settings: Settings) -> Any:
    try:
        from fanout.queues import open_queue_service
    except ImportError:  # queues not built into this tree
        return None
    return open_queue_service(
        engine=settings.engine, data_dir=settings.data_dir, redis_url=settings.redis_url
    )


def _error(status: int, code: str, message: str, details: Any = None) -> JSONBytes:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    try:
        return JSONBytes({"error": body}, status_code=status)
    except TypeError:  # the error echoes input orjson cannot encode (a lone surrogate)
        return JSONBytes({"error": json_safe(body)}, status_code=status)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413 before reading them all."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _error(413, "payload_too_large", f"body over {self.limit} bytes")(
                    scope, receive, send
                )
                return
        seen = 0
        refused = started = False

        async def limited() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                refused = True
                raise PayloadTooLarge(f"body over {self.limit} bytes")
            return message

        async def send_unless_refused(message: Message) -> None:
            # A chunked body is found too large only while it is read, and whatever
            # the app answers then (FastAPI: 400 "error parsing the body") gives way
            # to our 413.
            nonlocal started
            if refused and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, send_unless_refused)
        except PayloadTooLarge:
            if not refused:
                raise
        if refused and not started:
            await _error(413, "payload_too_large", f"body over {self.limit} bytes")(
                scope, receive, send
            )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the engine starts in the lifespan (one per process)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        node = Node(settings, make_backplane(settings), queues=make_queues(settings))
        await node.start()
        edge = Edge(node, HANDLERS)
        edge.start()
        app.state.node = node
        app.state.edge = edge
        # Start-up objects (modules, the app, routes) never die: keep them out of every
        # later full collection, which otherwise shows up as latency spikes (LESSONS).
        gc.collect()
        gc.freeze()
        log.info("herald ready: engine=%s", settings.engine)
        try:
            # uvicorn hands this state to the WebSocket protocol (`app_state`).
            yield {"edge": edge}
        finally:
            await edge.stop()
            await node.stop()

    app = FastAPI(
        title="Herald",
        version="0.1.0",
        summary="Real-time WebSocket pub/sub gateway with a durable queue path.",
        description="WebSocket clients connect to `GET /ws` (see the README for the protocol).",
        lifespan=lifespan,
        default_response_class=JSONBytes,
    )

    @app.exception_handler(HeraldError)
    async def herald_error(request: Request, exc: HeraldError) -> JSONBytes:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(max(1, math.ceil(exc.details["retry_after_s"])))}
        response = _error(exc.status, exc.code, exc.message, exc.details)
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONBytes:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _error(400, "invalid_request", "request validation failed", details)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONBytes:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    app.include_router(router)
    app.include_router(client_js_router)
    try:
        from gateway.queues_api import router as queues_router
    except ImportError:
        pass
    else:
        app.include_router(queues_router)
    app.add_middleware(BodyLimit, limit=body_limit(settings))
    return app


def body_limit(settings: Settings) -> int:
    """The largest request body: a batch of 500 messages at the size limit, plus JSON."""
    return max(settings.max_message_bytes * 501, 4 << 20)


def create_asgi_app(settings: Settings | None = None) -> ASGIApp:
    """What uvicorn serves: the FastAPI app behind the publish fast path."""
    settings = settings or Settings()
    return PublishFastPath(create_app(settings), body_limit(settings))

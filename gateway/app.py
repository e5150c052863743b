"""The FastAPI application: lifespan (engine start/stop), error mapping, routers."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fanout.backplane import Backplane
from fanout.node import Node
from fanout.queues import QueueService, open_queue_service
from gateway.aws.endpoint import router as aws_router
from gateway.client_js import router as client_js_router
from gateway.commands import HANDLERS
from gateway.edge import Edge
from gateway.fastpath import PublishFastPath
from gateway.http_api import router
from gateway.metrics import RequestTimer, Telemetry
from gateway.middleware import HttpMiddleware
from gateway.openapi import install_openapi
from gateway.pages import router as pages_router
from gateway.queues_api import confirm_router
from gateway.queues_api import router as queues_router
from gateway.responses import JSONBytes
from shared.config import HistoryRule, Settings, redact
from shared.errors import HeraldError, PayloadTooLarge, RateLimited
from shared.jsonvalue import json_safe

log = logging.getLogger("herald")


def make_backplane(settings: Settings) -> Backplane:
    """The engine's backplane, chosen at start-up (HERALD_ENGINE)."""
    if settings.engine == "redis":
        from fanout.redis.backplane import RedisBackplane

        return RedisBackplane(settings.backplane_url or settings.redis_url)
    from fanout.memory import MemoryBackplane

    return MemoryBackplane()


def make_queues(settings: Settings) -> QueueService:
    """The durable queue store of the engine (SQLite for memory, Redis for redis)."""
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


class BodyLimit(HttpMiddleware):
    """Refuse request bodies over `limit` bytes with 413 before reading them all."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
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


def install_error_handlers(app: FastAPI) -> None:
    """Render every error as `{"error": {"code", "message", "details"?}}` (docs/http-api.md).

    Validation errors answer 400 `invalid_request` (never FastAPI's 422), and a 503
    carries `Retry-After`. Tests that mount one router on a bare app use this too.
    """

    async def herald_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HeraldError)
        response = _error(exc.status, exc.code, exc.message, exc.details)
        if isinstance(exc, RateLimited):
            retry = max(1, math.ceil(exc.details["retry_after_s"]))
            response.headers["Retry-After"] = str(retry)
        elif exc.status == 503:
            response.headers["Retry-After"] = "1"
        return response

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _error(400, "invalid_request", _validation_message(request, details), details)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    app.add_exception_handler(HeraldError, herald_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)


def _validation_message(request: Request, details: list[dict[str, Any]]) -> str:
    """Name the missing header when a body was sent without `content-type: application/json`."""
    given = request.scope.get("state", {}).get("content_type_given")
    if given is not None and any(d["loc"][:1] == ["body"] for d in details):
        return (
            "request validation failed: send the body as JSON with 'content-type: application/json'"
        )
    return "request validation failed"


class JsonBodies:
    """Read API bodies as JSON whatever their content-type says (`curl -d` sends a form type).

    A body that does not parse still answers 400, whose message then names the missing
    `content-type: application/json` header (see `_validation_message`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only Herald's own API: the SQS/SNS endpoint (`/`, `/aws`) speaks form bodies and
        # AWS SDKs sign the content-type header.
        if (
            scope["type"] == "http"
            and scope["method"] in ("POST", "PUT", "PATCH")
            and scope["path"].startswith("/v1/")
        ):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            given = dict(scope["headers"]).get(b"content-type", b"")
            # Every body of this API is JSON: any other declared type is a client's default.
            if not given.split(b";")[0].strip().lower().endswith(b"json"):
                # In place: the request timer reads the matched route from this scope.
                scope["headers"] = [*headers, (b"content-type", b"application/json")]
                scope.setdefault("state", {})["content_type_given"] = given.decode("latin-1")
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the engine starts in the lifespan (one per process)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        node = Node(settings, make_backplane(settings), queues=make_queues(settings))
        tasks: list[asyncio.Task[None]] = []
        await node.start()
        if node.queues is not None:
            from gateway.apply import apply_file, follow_history_rules
            from gateway.webhooks import WebhookDispatcher

            if settings.resources is not None:
                await apply_file(node.queues, settings.resources)
            node.webhooks = WebhookDispatcher(node.queues, timeout_s=settings.webhook_timeout)
            await node.webhooks.start()
            env_rules = list(settings.history)
            settings.history = [
                *(HistoryRule(**r) for r in await node.queues.history_rules()),
                *env_rules,
            ]
            tasks.append(
                asyncio.create_task(follow_history_rules(node.queues, settings, env_rules))
            )
        edge = Edge(node, HANDLERS)
        edge.start()
        app.state.node = node
        app.state.edge = edge
        # Start-up objects (modules, the app, routes) never die: keep them out of every
        # later full collection, which otherwise shows up as latency spikes.
        gc.collect()
        gc.freeze()
        base = f"{settings.host}:{settings.port}"
        store = (
            f"data_dir={settings.data_dir.resolve()}"
            if settings.engine == "memory"
            else f"redis={redact(settings.redis_url)}"
        )
        # Logged once the lifespan is done: uvicorn listens on the bound socket next.
        log.info(
            "herald ready: engine=%s ws=ws://%s/ws docs=http://%s/docs %s",
            settings.engine,
            base,
            base,
            store,
        )
        try:
            # uvicorn hands this state to the WebSocket protocol (`app_state`).
            yield {"edge": edge}
        finally:
            for task in tasks:
                task.cancel()
            await edge.stop()
            if node.webhooks is not None:
                await node.webhooks.close()
            await node.stop()

    # Swagger UI and ReDoc come from the fastapi-offline wheel: /docs works offline.
    app = FastAPIOffline(
        title="Herald",
        version="0.1.0",
        summary="Real-time WebSocket pub/sub gateway with a durable queue path.",
        description="The HTTP API. WebSocket clients connect to `GET /ws`; "
        "the WebSocket protocol is in docs/protocol.md.",
        lifespan=lifespan,
        default_response_class=JSONBytes,
    )
    app.state.telemetry = telemetry = Telemetry()
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(router)
    app.include_router(client_js_router)
    app.include_router(pages_router)
    app.include_router(queues_router)
    app.include_router(confirm_router)
    app.include_router(aws_router)  # SQS and SNS on POST / and /aws (docs/aws.md)
    # The last added is the outermost: every answer, even a 413, carries CORS headers.
    app.add_middleware(JsonBodies)
    app.add_middleware(BodyLimit, limit=body_limit(settings))
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["Retry-After"],
        max_age=600,
    )
    app.add_middleware(RequestTimer, telemetry=telemetry)
    return app


def body_limit(settings: Settings) -> int:
    """The largest request body: a batch of 500 messages at the size limit, plus JSON."""
    return max(settings.max_message_bytes * 501, 4 << 20)


def create_asgi_app(settings: Settings | None = None) -> ASGIApp:
    """What uvicorn serves: the FastAPI app behind the publish fast path."""
    settings = settings or Settings()
    return PublishFastPath(create_app(settings), body_limit(settings))

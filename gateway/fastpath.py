"""The publish fast path: `POST /v1/publish` and `/v1/publish/batch` without FastAPI's routing.

Measured (docs/BENCHMARKS.md, "Ingest"): a FastAPI route that only reads its body costs
about five times a raw ASGI app under the same uvicorn, before Herald does any work, so
the publish routes could not come near the floor through FastAPI. This ASGI middleware
answers them itself when the request is the plain, valid case, and hands everything
else to FastAPI, which stays the one place that words validation errors:

- a content type other than `application/json`, a body orjson refuses (NaN, lone
  surrogates, integers over 64 bits...), or a shape the route's model would not take
  as it is (wrong types, extra fields) -> FastAPI, with the body replayed;
- a `HeraldError` (auth, a bad topic, rate limits, an unavailable backplane) ->
  rendered by the app's own `HeraldError` handler, so the reply is the same.

The FastAPI routes keep documenting these paths in OpenAPI and serve every fallback.
It sits inside `BodyLimit`, so the body limit applies before a byte is parsed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fanout.backplane import PublishOutcome
from shared.auth import bearer
from shared.errors import HeraldError

if TYPE_CHECKING:
    from fanout.node import Node

MAX_BATCH = 500  # as BatchIn in gateway/http_api.py
_PUBLISH_FIELDS = frozenset(("topic", "data", "attributes", "id"))
_BATCH_FIELDS = frozenset(("messages",))
_SCALARS = (str, int, float, bool)

Handler = Callable[["Node", Any, str | None], Awaitable[bytes | None]]


class _Fallback(Exception):
    """The request is not the plain case: FastAPI answers it."""


def _start(status: int, length: int) -> Message:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-length", b"%d" % length),
            (b"content-type", b"application/json"),
        ],
    }


def _result(outcome: PublishOutcome | HeraldError) -> dict[str, Any]:
    if isinstance(outcome, HeraldError):
        return {"error": outcome.to_dict()}
    if outcome.offset is None:
        return {"id": outcome.id}
    return {"id": outcome.id, "offset": outcome.offset}


def _plain_entry(entry: Any) -> bool:
    """What `PublishIn` (strict) takes unchanged: the node validates the rest."""
    if type(entry) is not dict or type(entry.get("topic")) is not str:
        return False
    if not _PUBLISH_FIELDS.issuperset(entry):
        return False
    attributes = entry.get("attributes")
    if attributes is not None and (
        type(attributes) is not dict or not all(type(v) in _SCALARS for v in attributes.values())
    ):
        return False
    msg_id = entry.get("id")
    return msg_id is None or type(msg_id) is str


async def _publish(node: Node, body: Any, authorization: str | None) -> bytes | None:
    if not _plain_entry(body):
        return None
    principal = node.auth.authenticate(bearer(authorization))
    (outcome,) = await node.publish([body], principal)
    if isinstance(outcome, HeraldError):
        raise outcome
    return orjson.dumps(_result(outcome))


async def _publish_batch(node: Node, body: Any, authorization: str | None) -> bytes | None:
    if type(body) is not dict or body.keys() != _BATCH_FIELDS:
        return None
    entries = body["messages"]
    if type(entries) is not list or len(entries) > MAX_BATCH:
        return None
    principal = node.auth.authenticate(bearer(authorization))
    outcomes = await node.publish(entries, principal)
    return orjson.dumps({"results": [_result(o) for o in outcomes]})


ROUTES: dict[str, Handler] = {"/v1/publish": _publish, "/v1/publish/batch": _publish_batch}


def _is_json(content_type: bytes) -> bool:
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json"


class PublishFastPath:
    """ASGI middleware: the publish routes' plain case, answered without FastAPI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization: str | None = None
        json_body = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                json_body = _is_json(value)
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        if not json_body:
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive)
        try:
            reply = await handler(scope["app"].state.node, orjson.loads(raw), authorization)
        except orjson.JSONDecodeError:
            reply = None
        except HeraldError as exc:
            await self._error(scope, receive, send, exc)
            return
        if reply is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        await send(_start(202, len(reply)))
        await send({"type": "http.response.body", "body": reply})

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: HeraldError) -> None:
        handler = scope["app"].exception_handlers[HeraldError]
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body read already, then the real channel's events."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay

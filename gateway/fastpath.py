"""The publish fast path: `POST /v1/publish` and `/v1/publish/batch` without FastAPI.

Measured (docs/BENCHMARKS.md, "Ingest"): a FastAPI route that only reads its body costs
about five times a raw ASGI app under the same uvicorn, before Herald does any work, and
FastAPI's middleware stack alone a tenth of a fast publish, so the publish routes could
not come near the floor through FastAPI. This ASGI app, in front of the FastAPI app,
answers them itself when the request is the plain, valid case, and hands everything
else to FastAPI, which stays the one place that words validation errors:

- a content type other than `application/json`, malformed JSON, or a shape the
  route's model would not take as it is (wrong types, extra fields) -> FastAPI, with
  the body replayed;
- JSON Herald refuses (NaN, lone surrogates, integers over 64 bits, deep nesting) ->
  the route's `parse_http_body` checks (`_parse`), so the same 400;
- a `HeraldError` (auth, a bad topic, rate limits, an unavailable backplane) ->
  rendered by the app's own `HeraldError` handler, so the reply is the same.

The FastAPI routes keep documenting these paths in OpenAPI and serve every fallback.
A chunked body or one over the body limit goes to FastAPI unread (`BodyLimit`: 413).
Middleware added to the FastAPI app does not see the requests served here.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from fanout.backplane import PublishOutcome
from gateway.bodies import BATCH_KEYS
from gateway.http_api import MAX_BATCH
from gateway.publish_limit import charge_publish
from shared.auth import bearer
from shared.errors import HeraldError, PayloadTooLarge
from shared.jsonvalue import check_fields, parse_http_body

if TYPE_CHECKING:
    from fastapi import FastAPI

    from fanout.node import Node

_PUBLISH_FIELDS = frozenset(("topic", "data", "attributes", "id"))
_BATCH_FIELDS = frozenset(("messages",))
_SCALARS = (str, int, float, bool)

Handler = Callable[["FastAPI", Any, str | None], Awaitable[bytes | None]]


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


async def _publish(app: FastAPI, body: Any, authorization: str | None) -> bytes | None:
    if not _plain_entry(body):
        return None
    node: Node = app.state.node
    principal = node.auth.authenticate(bearer(authorization))
    charge_publish(app.state, node, principal, 1)
    # `parse_http_body` checked every field of the body, as it does for the route.
    (outcome,) = await node.publish([body], principal, values_checked=True)
    if isinstance(outcome, HeraldError):
        raise outcome
    return orjson.dumps(_result(outcome))


async def _publish_batch(app: FastAPI, body: Any, authorization: str | None) -> bytes | None:
    if type(body) is not dict or body.keys() != _BATCH_FIELDS:
        return None
    entries = body["messages"]
    if type(entries) is not list or len(entries) > MAX_BATCH:
        return None
    node: Node = app.state.node
    principal = node.auth.authenticate(bearer(authorization))
    charge_publish(app.state, node, principal, len(entries))
    outcomes = await node.publish(entries, principal)
    return orjson.dumps({"results": [_result(o) for o in outcomes]})


ROUTES: dict[str, Handler] = {"/v1/publish": _publish, "/v1/publish/batch": _publish_batch}


# 19 digits in a row: a number orjson may read differently (2**64 becomes a float).
_LONG_NUMBER = re.compile(rb"\d{19}")


def _parse(raw: bytes, batch_keys: tuple[str, ...]) -> Any:
    """What the route's `parse_http_body` gives (or raises), read with orjson where
    orjson reads the same: an object with no long number in it. Everything else, and
    every body orjson refuses, goes through `parse_http_body` itself."""
    if _LONG_NUMBER.search(raw) is None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if type(body) is dict:
            # parse_http_body's checks: batch entries later, one by one; the rest now.
            check_fields(
                body
                if not batch_keys
                else {k: v for k, v in body.items() if not (k in batch_keys and type(v) is list)}
            )
            return body
    return parse_http_body(raw, batch_keys)


def _is_json(content_type: bytes) -> bool:
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json"


class PublishFastPath:
    """ASGI app in front of Herald's FastAPI app: the publish routes' plain case."""

    def __init__(self, app: FastAPI, body_limit: int) -> None:
        self.app = app
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization: str | None = None
        json_body = False
        length = -1
        for name, value in scope["headers"]:
            if name == b"content-type":
                json_body = _is_json(value)
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        # Chunked or too large: BodyLimit in the FastAPI app answers (413).
        if not json_body or not 0 <= length <= self.body_limit:
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive, length)
        try:
            body = _parse(raw, BATCH_KEYS if handler is _publish_batch else ())
            reply = await handler(self.app, body, authorization)
        except json.JSONDecodeError:
            reply = None
        except HeraldError as exc:
            # The app's own handler, so the reply is the one FastAPI would give.
            response = self.app.exception_handlers[HeraldError](Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        if reply is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        await send(_start(202, len(reply)))
        await send({"type": "http.response.body", "body": reply})


async def _read_body(receive: Receive, length: int) -> bytes:
    """The body, at most `length` bytes (its Content-Length, which the parser enforces)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > length:  # never from httptools; a bound for any other server
            raise PayloadTooLarge("body longer than its Content-Length")
        chunks.append(chunk)
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

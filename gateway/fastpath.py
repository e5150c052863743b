"""The ingest fast path: the hot POST routes without FastAPI's routing.

`/v1/publish`, `/v1/publish/batch`, and the queue routes `/v1/queues/{name}/messages/batch`,
`…/receive` and `…/ack`. Measured (docs/BENCHMARKS.md, "Issue 14"): a FastAPI route that
only reads its body costs about five times a raw ASGI app under the same uvicorn, before
Herald does any work, and FastAPI's middleware stack alone a tenth of a fast publish, so
these routes could not come near the floor through FastAPI. This ASGI app, in front of
the FastAPI app, answers them itself when the request is the plain, valid case, and hands
everything else to FastAPI, which stays the one place that words validation errors:

- a content type other than `application/json`, malformed JSON, or a shape the
  route's model would not take as it is (wrong types, extra fields) -> FastAPI, with
  the body replayed;
- JSON Herald refuses (NaN, lone surrogates, integers over 64 bits, deep nesting) ->
  the route's `parse_http_body` checks (`_parse`), so the same 400;
- a `HeraldError` (auth, a bad topic, rate limits, an unavailable backplane) ->
  rendered by the app's own `HeraldError` handler, so the reply is the same.

The FastAPI routes keep documenting these paths in OpenAPI and serve every fallback.
A chunked body or one over the body limit goes to FastAPI unread (`BodyLimit`: 413).
Middleware added to the FastAPI app does not see the requests served here, so the fast
path leaves to FastAPI every request with an `Origin` (the CORS middleware answers those)
and observes the HTTP latency histogram itself.

Under `herald serve` the same decisions serve requests without an ASGI cycle:
gateway.httpproto calls `match`, `plain_headers` and `PublishFastPath.answer` from its
HTTP protocol, and sends here (scope marked `FALLBACK`, so FastAPI answers at once) only
what it read and found not to be the plain case. The ASGI path below stays for every
request the protocol leaves to uvicorn (query strings, pipelined behind a request in
flight, other servers or tests).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from fanout.backplane import PublishOutcome
from fanout.queues import QueueService
from fanout.queues.model import MAX_BATCH as QUEUE_BATCH
from fanout.queues.model import MAX_VISIBILITY_S, MAX_WAIT_S
from gateway.bodies import BATCH_KEYS
from gateway.deps import admin_principal
from gateway.http_api import MAX_BATCH
from gateway.publish_limit import charge_publish
from gateway.queues_api import queue_service
from shared.auth import bearer
from shared.errors import HeraldError, PayloadTooLarge
from shared.jsonvalue import MAX_DEPTH, check_fields, parse_http_body

if TYPE_CHECKING:
    from fastapi import FastAPI

    from fanout.node import Node

_PUBLISH_FIELDS = frozenset(("topic", "data", "attributes", "id"))
_SCALARS = (str, int, float, bool)

Reply = bytes | None  # None: not the plain case, FastAPI answers
# (app, body, authorization, checked): `checked` when `_parse` proved every value of the
# body deliverable (`check_fields`), batch entries included.
Handler = Callable[["FastAPI", Any, str | None, bool], Awaitable[Reply]]
QueueHandler = Callable[["FastAPI", Any, str | None, str], Awaitable[Reply]]


# A scope key: the request was read by gateway.httpproto and is not the plain case;
# the fast path hands it to FastAPI as it is.
FALLBACK = "herald.fallback"


def json_headers(length: int) -> list[tuple[bytes, bytes]]:
    """The headers of a fast reply (uvicorn adds its own `date`, `server`, `connection`)."""
    return [(b"content-length", b"%d" % length), (b"content-type", b"application/json")]


class Route(NamedTuple):
    """What `match` found: how to answer a request, and how to account for it."""

    handler: Handler
    status: int  # of a plain reply
    batch_keys: tuple[str, ...]  # for `_parse`
    template: str  # the route's label in the latency histogram
    # The handler may take its first step outside an asyncio Task (gateway.httpproto
    # drives it inline): nothing before its first suspension needs `current_task()`
    # (`asyncio.timeout`). True of the publish routes; a queue `receive` may wait.
    inline: bool


class Answer(NamedTuple):
    """A reply of the fast path: (status, headers, body), and whether it was the plain case."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    plain: bool  # a plain reply is observed in the latency histogram; an error is not


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


async def _publish(app: FastAPI, body: Any, authorization: str | None, checked: bool) -> Reply:
    if not _plain_entry(body):
        return None
    node: Node = app.state.node
    principal = node.auth.authenticate(bearer(authorization))
    charge_publish(app.state, node, principal, 1)
    # `_parse` checked every field of the body (no batch keys), as the route's parser does.
    (outcome,) = await node.publish([body], principal, values_checked=checked)
    if isinstance(outcome, HeraldError):
        raise outcome
    return orjson.dumps(_result(outcome))


async def _publish_batch(
    app: FastAPI, body: Any, authorization: str | None, checked: bool
) -> Reply:
    # `entries`, or its deprecated name `messages` (docs/http-api.md); both: FastAPI.
    if type(body) is not dict or len(body) != 1:
        return None
    (key,) = body
    if key not in BATCH_KEYS:
        return None
    entries = body[key]
    if type(entries) is not list or not 1 <= len(entries) <= MAX_BATCH:
        return None
    node: Node = app.state.node
    principal = node.auth.authenticate(bearer(authorization))
    charge_publish(app.state, node, principal, len(entries))
    # Unchecked entries are checked one by one: a bad one fails alone (its result).
    outcomes = await node.publish(entries, principal, values_checked=checked)
    return orjson.dumps({"results": [_result(o) for o in outcomes]})


def _number(value: Any, low: float, high: float, kind: tuple[type, ...] = (int, float)) -> bool:
    return type(value) in kind and low <= value <= high


def _strings(value: Any) -> bool:
    return (
        type(value) is list
        and 1 <= len(value) <= QUEUE_BATCH
        and all(type(v) is str for v in value)
    )


async def _queue_send_batch(app: FastAPI, body: Any, authorization: str | None, name: str) -> Reply:
    """`BatchIn` as it is: {"entries": [objects]}; the service checks each entry."""
    if type(body) is not dict or body.keys() != _QUEUE_BATCH_FIELDS:
        return None
    entries = body["entries"]
    if type(entries) is not list or not 1 <= len(entries) <= QUEUE_BATCH:
        return None
    if not all(type(e) is dict for e in entries):
        return None
    svc = _queue_caller(app, authorization)
    return orjson.dumps({"results": await svc.send_batch(name, entries)})


async def _queue_receive(app: FastAPI, body: Any, authorization: str | None, name: str) -> Reply:
    """`ReceiveIn` as it is: `max`, `wait`, `visibility_timeout`, each in range."""
    if type(body) is not dict or not _RECEIVE_FIELDS.issuperset(body):
        return None
    count, wait = body.get("max", 1), body.get("wait", 0)
    vt = body.get("visibility_timeout")
    if not (
        _number(count, 1, QUEUE_BATCH, (int,))
        and _number(wait, 0, MAX_WAIT_S)
        and (vt is None or _number(vt, 0, MAX_VISIBILITY_S))
    ):
        return None
    svc = _queue_caller(app, authorization)
    msgs = await svc.receive(name, max=count, wait=wait, visibility_timeout=vt)
    return orjson.dumps({"messages": msgs})


async def _queue_ack(app: FastAPI, body: Any, authorization: str | None, name: str) -> Reply:
    """`AckIn` as it is: {"receipts": [1-100 strings]}."""
    if type(body) is not dict or body.keys() != _ACK_FIELDS or not _strings(body["receipts"]):
        return None
    svc = _queue_caller(app, authorization)
    return orjson.dumps({"results": await svc.ack(name, body["receipts"])})


def _queue_caller(app: FastAPI, authorization: str | None) -> QueueService:
    """The queue router's dependencies, in their order: an admin caller, then the service."""
    node: Node = app.state.node
    admin_principal(node, authorization)
    return queue_service(node)


_QUEUE_BATCH_FIELDS = frozenset(("entries",))
_RECEIVE_FIELDS = frozenset(("max", "wait", "visibility_timeout"))
_ACK_FIELDS = frozenset(("receipts",))
# POST /v1/queues/{name}/<action>
QUEUE_ROUTES: dict[str, QueueHandler] = {
    "messages/batch": _queue_send_batch,
    "receive": _queue_receive,
    "ack": _queue_ack,
}
ROUTES: dict[str, Route] = {
    "/v1/publish": Route(_publish, 202, (), "/v1/publish", True),
    "/v1/publish/batch": Route(_publish_batch, 202, BATCH_KEYS, "/v1/publish/batch", True),
}


# One pass over the body for both screens below: every digit becomes "0", every
# opening bracket "{", everything else ".". A regex search for 19 digits in a row cost
# 130 µs on a 10 KB batch body, this 10 µs.
_SCREEN = bytes(
    0x30 if 0x30 <= b <= 0x39 else 0x7B if b in (0x5B, 0x7B) else 0x2E for b in range(256)
)
# 19 digits in a row: a number orjson may read differently (2**64 becomes a float).
_LONG_NUMBER = b"0" * 19


def _parse(raw: bytes, batch_keys: tuple[str, ...]) -> tuple[Any, bool]:
    """What the route's `parse_http_body` gives (or raises), read with orjson where
    orjson reads the same: an object with no long number in it. Everything else, and
    every body orjson refuses, goes through `parse_http_body` itself.

    With it, whether every value was checked, batch entries included (they are not
    when `parse_http_body` or `check_fields` had to look: they are checked one by one
    later, so a bad entry fails alone)."""
    screened = raw.translate(_SCREEN)
    if _LONG_NUMBER not in screened:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if type(body) is dict:
            # orjson refuses what `check_fields` looks for (lone surrogates, NaN,
            # infinities), and the screen above caught the integers it would read
            # as floats; what is left is depth, which needs at least MAX_DEPTH
            # brackets (those inside strings counted too: only ever too many).
            if screened.count(b"{") <= MAX_DEPTH:
                return body, True
            # parse_http_body's checks: batch entries later, one by one; the rest now.
            check_fields(
                body
                if not batch_keys
                else {k: v for k, v in body.items() if not (k in batch_keys and type(v) is list)}
            )
            return body, not batch_keys
    return parse_http_body(raw, batch_keys), not batch_keys


def _is_json(content_type: bytes) -> bool:
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json"


class PublishFastPath:
    """ASGI app in front of Herald's FastAPI app: the ingest routes' plain case."""

    def __init__(self, app: FastAPI, body_limit: int) -> None:
        self.app = app
        self.body_limit = body_limit
        # `labels()` looks its child up under a lock: a tenth of a plain publish.
        self._observers: dict[str, Callable[[float], None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (
            match(scope["method"], scope["path"])
            if scope["type"] == "http" and FALLBACK not in scope
            else None
        )
        if route is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        length, authorization = plain_headers(scope["headers"], self.body_limit)
        if length < 0:
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive, length)
        answer = await self.answer(route, raw, authorization, scope)
        if answer is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await send({"type": "http.response.body", "body": answer.body})
        if answer.plain:
            self.observe(route.template, answer.status, start)

    async def answer(
        self, route: Route, raw: bytes, authorization: str | None, scope: Scope
    ) -> Answer | None:
        """The reply to a request `match` and `plain_headers` let through, whose body is
        `raw`; None when it is not the plain case (FastAPI answers, the body replayed).

        The one place that runs a fast route: the ASGI path above and gateway.httpproto,
        which serves these routes without an ASGI cycle, both come here.
        """
        try:
            body, checked = _parse(raw, route.batch_keys)
            reply = await route.handler(self.app, body, authorization, checked)
        except json.JSONDecodeError:
            return None
        except HeraldError as exc:
            # The app's own handler, so the reply is the one FastAPI would give.
            response = self.app.exception_handlers[HeraldError](Request(scope), exc)
            if inspect.isawaitable(response):
                response = await response
            return Answer(response.status_code, response.raw_headers, bytes(response.body), False)
        if reply is None:
            return None
        return Answer(route.status, json_headers(len(reply)), reply, True)

    def observe(self, template: str, status: int, start: float) -> None:
        """The FastAPI app's RequestTimer does not see fast replies: observe one here."""
        observe = self._observers.get(template)
        if observe is None:
            histogram = self.app.state.telemetry.http_latency
            observe = histogram.labels("POST", template, str(status)).observe
            self._observers[template] = observe  # one per route: a handful
        observe(time.perf_counter() - start)


def plain_headers(headers: list[tuple[bytes, bytes]], body_limit: int) -> tuple[int, str | None]:
    """(Content-Length, Authorization) of a request the fast path may read; a length of
    -1 when FastAPI answers it unread: not JSON, chunked or over `body_limit` (BodyLimit
    answers 413), or with an `Origin` (the CORS middleware answers)."""
    authorization: str | None = None
    json_body = False
    length = -1
    for name, value in headers:
        if name == b"content-type":
            json_body = _is_json(value)
        elif name == b"content-length":
            length = int(value) if value.isdigit() else -1
        elif name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"origin":
            return -1, None
    if not json_body or length > body_limit:
        return -1, None
    return length, authorization


def match(method: str, path: str) -> Route | None:
    """The fast route for a request, or None: FastAPI serves it."""
    if method != "POST":
        return None
    route = ROUTES.get(path)
    if route is not None:
        return route
    if not path.startswith("/v1/queues/"):
        return None
    name, _, action = path[len("/v1/queues/") :].partition("/")
    queue_handler = QUEUE_ROUTES.get(action)
    if queue_handler is None or not name:
        return None

    async def bound(app: FastAPI, body: Any, authorization: str | None, checked: bool) -> Reply:
        return await queue_handler(app, body, authorization, name)  # the service checks

    template = "/v1/queues/{name}/" + action
    return Route(bound, 200, BATCH_KEYS if action.endswith("/batch") else (), template, False)


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

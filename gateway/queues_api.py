"""HTTP API of durable queues and topic→queue subscriptions (docs/queues.md, docs/http-api.md).

Thin handlers: parse (pydantic models, so OpenAPI documents every body),
authorize (`require_admin`), call the node's `QueueService`, return its dicts.
Errors are `HeraldError`s, rendered by the app's exception handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response, status
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, ConfigDict, Field

from fanout.node import Node
from fanout.queues import QueueService
from fanout.queues.model import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_RETENTION_S,
    DEFAULT_VISIBILITY_S,
    MAX_BATCH,
    MAX_DELAY_S,
    MAX_DEPTH_LIMIT,
    MAX_MESSAGE_BYTES,
    MAX_PRIORITY,
    MAX_RECEIVE_COUNT,
    MAX_RETENTION_S,
    MAX_TOKEN_CHARS,
    MAX_VISIBILITY_S,
    MAX_WAIT_S,
    MIN_MESSAGE_BYTES,
    MIN_RETENTION_S,
)
from gateway.bodies import StrictJSONRoute
from gateway.deps import get_node, require_admin
from gateway.openapi import AUTH, errors
from gateway.responses import JSONBytes
from shared.errors import BackplaneUnavailable, InvalidRequest

# Every route authenticates (401/403) and needs the queue store (503).
router = APIRouter(
    dependencies=[Depends(require_admin)], responses=errors(*AUTH, 503), route_class=StrictJSONRoute
)

Scalar = str | int | float | bool
AttributeValue = Scalar | list[Scalar]


def queue_post(
    path: str, model: type[BaseModel], *codes: int, **kwargs: Any
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """`router.post` for an operation on one queue: tagged `queues`, documenting `model`
    and the error `codes` it adds to the router's."""
    return router.post(
        path, response_model=model, tags=["queues"], responses=errors(*codes), **kwargs
    )


def delete_route(path: str, tag: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """`router.delete` of one resource: 204 No Content, or 404 when it does not exist."""
    return router.delete(
        path, status_code=status.HTTP_204_NO_CONTENT, tags=[tag], responses=errors(404)
    )


async def queues(request: Request) -> QueueService:
    """The node's queue service (503 when this node runs without one)."""
    return queue_service(await get_node(request))


def queue_service(node: Node) -> QueueService:
    """`queues` for a node at hand (the fast path's too)."""
    svc: QueueService | None = node.queues
    if svc is None:
        raise BackplaneUnavailable("queues are not enabled on this node")
    return svc


Queues = Annotated[QueueService, Depends(queues)]


class _In(BaseModel):
    # Strict: "30" and true are not numbers, as on the WebSocket (issue 9).
    model_config = ConfigDict(extra="forbid", strict=True)


class DeadLetterIn(_In):
    queue: str = Field(description="dead-letter queue (same kind: fifo or standard)")
    max_receive_count: int = Field(ge=1, le=MAX_RECEIVE_COUNT)


class QueueAttributesIn(_In):
    """Attributes to set; omitted ones keep their value (defaults on create)."""

    visibility_timeout: float | None = Field(
        None, ge=0, le=MAX_VISIBILITY_S, description=f"s, default {DEFAULT_VISIBILITY_S}"
    )
    delay: float | None = Field(None, ge=0, le=MAX_DELAY_S, description="s, default 0")
    retention: float | None = Field(
        None,
        ge=MIN_RETENTION_S,
        le=MAX_RETENTION_S,
        description=f"s, default {DEFAULT_RETENTION_S}",
    )
    max_message_bytes: int | None = Field(
        None,
        ge=MIN_MESSAGE_BYTES,
        le=MAX_MESSAGE_BYTES,
        description=f"default {DEFAULT_MAX_MESSAGE_BYTES}",
    )
    dead_letter: DeadLetterIn | None = Field(None, description="null removes it")
    fifo: bool | None = Field(None, description="must match the '.fifo' name suffix")
    content_dedup: bool | None = Field(None, description="fifo only: dedup by SHA-256 of body")
    max_depth: int | None = Field(
        None, ge=1, le=MAX_DEPTH_LIMIT, description="sends answer 503 queue_full at this"
    )


class QueueInfo(BaseModel):
    name: str
    fifo: bool
    visibility_timeout: int | float
    delay: int | float
    retention: int | float
    max_message_bytes: int
    dead_letter: dict[str, Any] | None
    content_dedup: bool
    max_depth: int | None
    created_at: int = Field(description="Unix ms")
    tags: dict[str, str] | None = Field(None, description="set by the SQS API (docs/aws.md)")
    aws: dict[str, str] | None = Field(
        None, description="SQS attributes Herald stores but does not act on (docs/aws.md)"
    )
    visible: int = 0
    in_flight: int = 0
    delayed: int = 0
    oldest_age_s: float = 0.0
    sent_total: int = 0
    received_total: int = 0
    deleted_total: int = 0
    dead_lettered_total: int = 0


class QueueList(BaseModel):
    queues: list[QueueInfo]


class SendIn(_In):
    body: Any = Field(description="any JSON value")
    attributes: dict[str, AttributeValue] | None = None
    delay: float | None = Field(
        None, ge=0, le=MAX_DELAY_S, description="s; default: the queue's delay"
    )
    priority: int | None = Field(
        None, ge=0, le=MAX_PRIORITY, description="higher first (standard queues)"
    )
    dedup_id: str | None = Field(
        None, min_length=1, max_length=MAX_TOKEN_CHARS, description="5 min window"
    )
    group_id: str | None = Field(
        None, min_length=1, max_length=MAX_TOKEN_CHARS, description="fifo: required"
    )


class SendOut(BaseModel):
    id: str


class QueueBatchIn(_In):
    entries: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH, description="each entry as for a single send"
    )


class Results(BaseModel):
    results: list[dict[str, Any]] = Field(description="per entry: {id} or {error}")


class ReceiveIn(_In):
    max: int = Field(1, ge=1, le=MAX_BATCH)
    wait: float = Field(0, ge=0, le=MAX_WAIT_S, description="long poll, s")
    visibility_timeout: float | None = Field(None, ge=0, le=MAX_VISIBILITY_S)


class ReceivedMessage(BaseModel):
    id: str
    receipt: str
    body: Any
    attributes: dict[str, Any]
    receive_count: int
    sent_at: int = Field(description="Unix ms")
    first_received_at: int = Field(description="Unix ms")


class ReceiveOut(BaseModel):
    messages: list[ReceivedMessage]


class AckIn(_In):
    receipts: list[str] = Field(min_length=1, max_length=MAX_BATCH)


class NackIn(_In):
    receipt: str
    delay: float = Field(0, ge=0, le=MAX_VISIBILITY_S, description="s until visible again")


class VisibilityIn(_In):
    receipt: str
    timeout: float = Field(ge=0, le=MAX_VISIBILITY_S, description="s from now; 0 releases at once")


class Ok(BaseModel):
    ok: bool = True


class Purged(BaseModel):
    purged: int


class Moved(BaseModel):
    moved: int


class WebhookDeadLetterIn(_In):
    queue: str = Field(description="existing queue that receives exhausted messages")


class SubscriptionIn(_In):
    """A topic→queue subscription (`queue`) or a webhook subscription (`endpoint`)."""

    topic: str = Field(description="topic or pattern, e.g. orders.>")
    queue: str | None = Field(None, description="queue to enqueue on (queue form)")
    endpoint: str | None = Field(None, description="http:// or https:// URL (webhook form)")
    filter_policy: dict[str, Any] | None = Field(None, description="SNS-style filter policy")
    delivery_policy: dict[str, Any] | None = Field(
        None, description="webhook: SNS HTTP/S delivery policy (numRetries, backoffFunction...)"
    )
    raw: bool = Field(False, description="webhook: POST only `data`, not the whole envelope")
    secret: str | None = Field(None, description="webhook: HMAC key; generated when omitted")
    dead_letter: WebhookDeadLetterIn | None = Field(None, description="webhook: DLQ")
    confirm: bool = Field(False, description="webhook: endpoint must confirm first (SNS-style)")


class SubscriptionOut(BaseModel):
    id: str
    topic: str
    queue: str | None
    filter_policy: dict[str, Any] | None
    created_at: int
    endpoint: str | None = None
    delivery_policy: dict[str, Any] | None = None
    raw: bool | None = None
    dead_letter: dict[str, Any] | None = None
    status: str | None = Field(None, description="webhook: confirmed | pending_confirmation")
    secret: str | None = Field(None, description="webhook: returned on create only")
    secret_hash: str | None = Field(None, description="webhook: sha256(secret)[:16]")
    options: dict[str, Any] | None = Field(
        None, description="SNS subscription attributes, when made by the SNS API (docs/aws.md)"
    )


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut]


class ConfirmIn(_In):
    token: str = Field(min_length=1, max_length=200)


# ---- queues --------------------------------------------------------------------------------


@router.put(
    "/v1/queues/{name}", response_model=QueueInfo, tags=["queues"], responses=errors(400, 404, 413)
)
async def put_queue(
    name: str, svc: Queues, attrs: Annotated[QueueAttributesIn | None, Body()] = None
) -> dict[str, Any]:
    """Create a queue or update its attributes."""
    await svc.create_or_update(name, attrs.model_dump(exclude_unset=True) if attrs else {})
    return await svc.get(name)


@router.get("/v1/queues", response_model=QueueList, tags=["queues"])
async def list_queues(svc: Queues) -> dict[str, Any]:
    return {"queues": await svc.list_queues()}


@router.get("/v1/queues/{name}", response_model=QueueInfo, tags=["queues"], responses=errors(404))
async def get_queue(name: str, svc: Queues) -> dict[str, Any]:
    return await svc.get(name)


@delete_route("/v1/queues/{name}", "queues")
async def delete_queue(name: str, svc: Queues) -> Response:
    await svc.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@queue_post("/v1/queues/{name}/purge", Purged, 404)
async def purge_queue(name: str, svc: Queues) -> dict[str, Any]:
    return {"purged": await svc.purge(name)}


# ---- messages ------------------------------------------------------------------------------


@queue_post("/v1/queues/{name}/messages", SendOut, 400, 404, 413, status_code=201)
async def send_message(name: str, msg: SendIn, svc: Queues) -> JSONBytes:
    # The hot routes return their bytes: `response_model` documents the reply, and
    # validating what the service built cost a tenth of a send/receive/ack (issue 14).
    return JSONBytes(await svc.send(name, msg.model_dump(exclude_unset=True)), status_code=201)


@queue_post("/v1/queues/{name}/messages/batch", Results, 400, 404, 413)
async def send_batch(name: str, batch: QueueBatchIn, svc: Queues) -> JSONBytes:
    """Up to 100 entries; one bad entry does not fail the others."""
    return JSONBytes({"results": await svc.send_batch(name, batch.entries)})


@queue_post("/v1/queues/{name}/receive", ReceiveOut, 400, 404, 413)
async def receive_messages(
    name: str, svc: Queues, req: Annotated[ReceiveIn | None, Body()] = None
) -> JSONBytes:
    """Claim visible messages, long-polling up to `wait` seconds."""
    r = req or ReceiveIn()
    msgs = await svc.receive(name, max=r.max, wait=r.wait, visibility_timeout=r.visibility_timeout)
    return JSONBytes({"messages": msgs})


@queue_post("/v1/queues/{name}/ack", Results, 400, 404, 413)
async def ack_messages(name: str, req: AckIn, svc: Queues) -> JSONBytes:
    """Delete messages by receipt; per receipt `{receipt, ok}` or `{receipt, error}`."""
    return JSONBytes({"results": await svc.ack(name, req.receipts)})


@queue_post("/v1/queues/{name}/nack", Ok, 400, 404, 413)
async def nack_message(name: str, req: NackIn, svc: Queues) -> dict[str, Any]:
    await svc.nack(name, req.receipt, req.delay)
    return {"ok": True}


@queue_post("/v1/queues/{name}/visibility", Ok, 400, 404, 413)
async def change_visibility(name: str, req: VisibilityIn, svc: Queues) -> dict[str, Any]:
    await svc.change_visibility(name, req.receipt, req.timeout)
    return {"ok": True}


@queue_post("/v1/queues/{name}/redrive", Moved, 404)
async def redrive(name: str, svc: Queues) -> dict[str, Any]:
    """Move the dead-lettered messages of queue `name` back to their source queues."""
    return {"moved": await svc.redrive(name)}


# ---- topic → queue subscriptions -------------------------------------------------------------


@router.post(
    "/v1/subscriptions",
    status_code=201,
    response_model=SubscriptionOut,
    tags=["subscriptions"],
    responses=errors(400, 404, 413),
)
async def create_subscription(req: SubscriptionIn, svc: Queues, request: Request) -> dict[str, Any]:
    """Enqueue (queue form) or POST (webhook form) every matching published message."""
    if (req.queue is None) == (req.endpoint is None):
        raise InvalidRequest("give exactly one of 'queue' and 'endpoint'")
    if req.queue is not None:
        webhook_only = {"delivery_policy", "raw", "secret", "dead_letter", "confirm"}
        if webhook_only & req.model_fields_set:
            raise InvalidRequest(
                "delivery_policy, raw, secret, dead_letter, confirm: webhooks only"
            )
        return await svc.create_subscription(req.topic, req.queue, req.filter_policy)
    assert req.endpoint is not None
    out = await svc.create_webhook_subscription(
        req.topic,
        req.endpoint,
        req.filter_policy,
        delivery_policy=req.delivery_policy,
        raw=req.raw,
        secret=req.secret,
        dead_letter=req.dead_letter.model_dump() if req.dead_letter else None,
        confirm=req.confirm,
    )
    webhooks = (await get_node(request)).webhooks
    if webhooks is not None:
        webhooks.changed()
        token = out.pop("token", None)
        if token is not None:
            url = str(request.url_for("confirm_subscription", sub_id=out["id"]))
            task = asyncio.create_task(
                webhooks.send_confirmation(out["id"], f"{url}?token={token}")
            )
            _background.add(task)
            task.add_done_callback(_background.discard)
    return out


_background: set[asyncio.Task[None]] = set()


@router.get("/v1/subscriptions", response_model=SubscriptionList, tags=["subscriptions"])
async def list_subscriptions(svc: Queues) -> dict[str, Any]:
    return {"subscriptions": await svc.list_subscriptions()}


@delete_route("/v1/subscriptions/{sub_id}", "subscriptions")
async def delete_subscription(sub_id: str, svc: Queues) -> Response:
    await svc.delete_subscription(sub_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


confirm_router = APIRouter()


_CONFIRM: dict[str, Any] = {
    "response_model": SubscriptionOut,
    "tags": ["subscriptions"],
    "responses": errors(400, 403, 404, 503),
}


# GET for a link followed by hand, POST for a program (as SNS's SubscribeURL).
@confirm_router.post(
    "/v1/subscriptions/{sub_id}/confirm", operation_id="confirm_subscription_post", **_CONFIRM
)
@confirm_router.get("/v1/subscriptions/{sub_id}/confirm", name="confirm_subscription", **_CONFIRM)
async def confirm_subscription(sub_id: str, token: str, request: Request) -> dict[str, Any]:
    """Confirm a webhook subscription; the token is the credential (as in SNS)."""
    svc = await queues(request)
    out = await svc.confirm_subscription(sub_id, token)
    webhooks = (await get_node(request)).webhooks
    if webhooks is not None:
        webhooks.changed()
    return out


# ---- history rules ------------------------------------------------------------------------


class HistoryRulesIO(_In):
    rules: list[dict[str, Any]] = Field(
        max_length=1000, description="as HERALD_HISTORY: {pattern, size?, ttl?}, first match wins"
    )


@router.get("/v1/history-rules", response_model=HistoryRulesIO, tags=["topics"])
async def get_history_rules(svc: Queues) -> dict[str, Any]:
    """History rules declared at runtime (checked before `HERALD_HISTORY`)."""
    return {"rules": await svc.history_rules()}


@router.put(
    "/v1/history-rules",
    response_model=HistoryRulesIO,
    tags=["topics"],
    responses=errors(400, 413),
)
async def put_history_rules(req: HistoryRulesIO, svc: Queues) -> dict[str, Any]:
    """Replace the declared history rules; every gateway follows within a second."""
    return {"rules": await svc.set_history_rules(req.rules)}

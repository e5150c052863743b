"""HTTP API for publishers and operators (docs/http-api.md): thin handlers over the node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, ConfigDict, Field

from fanout.backplane import PublishOutcome
from fanout.node import MAX_OFFSET, Node
from gateway.bodies import StrictJSONRoute
from gateway.deps import get_node, get_principal
from gateway.metrics import render_metrics, stats_snapshot
from gateway.openapi import AUTH, ErrorResponse, errors
from gateway.publish_limit import check_publish_rate
from gateway.responses import JSONBytes
from shared.auth import Principal
from shared.errors import HeraldError, InvalidRequest

router = APIRouter(route_class=StrictJSONRoute)

MAX_BATCH = 500
Scalar = str | int | float | bool


class PublishIn(BaseModel):
    """One message (docs/protocol.md, Messages). `id` makes the publish idempotent for 5 minutes."""

    # Strict: "30" and true are not numbers, as on the WebSocket (issue 9).
    model_config = ConfigDict(strict=True)

    topic: str = Field(examples=["game.12345.score"])
    data: Any = Field(default=None, examples=[{"home": 2, "away": 1}])
    attributes: dict[str, Scalar] | None = Field(default=None, examples=[{"gameId": "12345"}])
    id: str | None = None


class PublishOut(BaseModel):
    id: str
    offset: int | None = None


class PublishBatchIn(BaseModel):
    """Up to 500 messages, each as for `POST /v1/publish`, in `entries`."""

    model_config = ConfigDict(strict=True)

    # Entries stay loosely typed so that one bad entry is reported on its own
    # instead of failing the whole batch in validation.
    entries: list[Any] | None = Field(
        default=None, max_length=MAX_BATCH, description="the messages (1-500)"
    )
    messages: list[Any] | None = Field(
        default=None,
        max_length=MAX_BATCH,
        deprecated=True,
        description="old name of `entries`, still accepted",
    )

    def items(self) -> list[Any]:
        """The batch's messages, from `entries` or the deprecated `messages`."""
        # Read past the attribute: pydantic warns on every access to a deprecated field,
        # and accepting the old name is this method's job.
        old: list[Any] | None = self.__dict__["messages"]
        if self.entries is not None and old is not None:
            raise InvalidRequest("send 'entries' only ('messages' is its deprecated name)")
        items = self.entries if self.entries is not None else old
        if not items:
            raise InvalidRequest(f"'entries' must hold 1 to {MAX_BATCH} messages")
        return items


class PublishBatchOut(BaseModel):
    results: list[dict[str, Any]] = Field(
        description="per entry, in order: {id, offset?} or {error}"
    )


class HistoryOut(BaseModel):
    """A page of a topic's history; `recovered: false` when it no longer reaches `since`."""

    epoch: str = Field(description="changes when the history was lost and restarted")
    offset: int = Field(description="the topic's latest offset")
    recovered: bool
    messages: list[dict[str, Any]] = Field(description="envelopes, oldest first")


class ReadyOut(BaseModel):
    ready: bool
    backplane: bool
    draining: bool
    queues: bool | None = None


class StatsOut(BaseModel):
    """The counters of /metrics under the same names, without the `herald_` prefix."""

    model_config = ConfigDict(extra="allow")

    engine: str
    ready: bool
    draining: bool
    connections: int
    connections_accepted: int
    subscriptions: int
    subscription_groups: int
    patterns: int
    messages_published: int
    messages_received: int
    messages_delivered: int
    messages_dropped: int
    frames_written: int
    batches: int
    slow_disconnects: int
    lagged_notices: int
    publish_flush_seconds: dict[str, Any] = Field(
        description="count, sum and cumulative buckets by le, as the herald_publish_flush_seconds"
        " histogram in /metrics"
    )
    backplane: dict[str, int] = Field(description="as herald_backplane_<name> in /metrics")
    queues: dict[str, dict[str, Any]] | None = Field(
        default=None, description="per queue, as herald_queue_<name>{queue=...} in /metrics"
    )


def _result(outcome: PublishOutcome | HeraldError) -> dict[str, Any]:
    if isinstance(outcome, HeraldError):
        return {"error": outcome.to_dict()}
    out: dict[str, Any] = {"id": outcome.id}
    if outcome.offset is not None:
        out["offset"] = outcome.offset
    return out


NodeDep = Annotated[Node, Depends(get_node)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def publish_post(
    path: str, model: type[BaseModel]
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """`router.post` for a publish route: 202, tagged `topics`, with the errors of a publish
    (body, auth, size, rate limit, backplane)."""
    return router.post(
        path,
        status_code=202,
        response_model=model,
        tags=["topics"],
        responses=errors(400, *AUTH, 413, 429, 503),
    )


@publish_post("/v1/publish", PublishOut)
async def publish(
    request: Request, body: PublishIn, node: NodeDep, principal: PrincipalDep
) -> JSONBytes:
    """Publish one message to a topic."""
    check_publish_rate(request, node, principal, 1)
    (outcome,) = await node.publish([body.model_dump(exclude_unset=True)], principal)
    if isinstance(outcome, HeraldError):
        raise outcome
    return JSONBytes(_result(outcome), status_code=202)


@publish_post("/v1/publish/batch", PublishBatchOut)
async def publish_batch(
    request: Request, body: PublishBatchIn, node: NodeDep, principal: PrincipalDep
) -> JSONBytes:
    """Publish up to 500 messages; each entry gets its own result or error."""
    items = body.items()
    check_publish_rate(request, node, principal, len(items))
    outcomes = await node.publish(items, principal)
    return JSONBytes({"results": [_result(o) for o in outcomes]}, status_code=202)


@router.get(
    "/v1/topics/{topic}/history",
    tags=["topics"],
    response_class=Response,
    responses={200: {"model": HistoryOut, "description": "the page"}, **errors(400, *AUTH, 503)},
)
async def history(
    topic: str,
    node: NodeDep,
    principal: PrincipalDep,
    since: Annotated[int | None, Query(ge=0, le=MAX_OFFSET)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> Response:
    """Messages kept for a history-enabled topic, after offset `since`."""
    principal.check_subscribe(topic)
    page = await node.history(topic, since, limit)
    body = (
        b'{"epoch":"'
        + page.epoch.encode()
        + b'","offset":'
        + str(page.latest).encode()
        + b',"recovered":'
        + (b"true" if page.complete else b"false")
        + b',"messages":['
        + b",".join(m.envelope for m in page.messages)
        + b"]}"
    )
    return Response(body, media_type="application/json")


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["operations"],
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "not ready (with Retry-After)"}},
)
async def readyz(node: NodeDep) -> JSONBytes:
    """Ready for traffic: the backplane is reachable and the process is not draining."""
    checks = {"backplane": node.backplane.ready(), "draining": node.draining}
    if node.queues is not None:
        checks["queues"] = await node.queues.ping()
    ok = checks["backplane"] and not node.draining and checks.get("queues", True)
    if ok:
        return JSONBytes({"ready": True, **checks})
    # Load balancers and clients back off instead of hammering a draining pod.
    return JSONBytes({"ready": False, **checks}, status_code=503, headers={"Retry-After": "1"})


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, node: NodeDep) -> Response:
    """Prometheus text format."""
    body, content_type = await render_metrics(
        node, request.app.state.edge, request.app.state.telemetry
    )
    return Response(body, media_type=content_type)


@router.get("/v1/stats", tags=["operations"], response_model=StatsOut)
async def stats(request: Request, node: NodeDep) -> JSONBytes:
    """Engine counters, connections and queue stats as JSON (the names of /metrics)."""
    return JSONBytes(await stats_snapshot(node, request.app.state.edge))


@router.get(
    "/ws",
    tags=["websocket"],
    status_code=426,
    response_model=ErrorResponse,
    responses={426: {"model": ErrorResponse, "description": "upgrade_required"}},
)
async def ws_without_upgrade() -> JSONBytes:
    """The WebSocket endpoint (docs/protocol.md), reached without `Upgrade: websocket`.

    A proxy that drops the `Upgrade` header sends the handshake here as plain HTTP.
    """
    body = {
        "code": "upgrade_required",
        "message": "GET /ws is a WebSocket endpoint: send 'Upgrade: websocket' and "
        "'Connection: Upgrade' (a proxy in between may be dropping them; see docs/deploy.md)",
    }
    return JSONBytes({"error": body}, status_code=426, headers={"Upgrade": "websocket"})

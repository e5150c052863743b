"""HTTP API for publishers and operators (SPEC §5): thin handlers over the node."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from fanout.backplane import PublishOutcome
from fanout.node import MAX_OFFSET, Node
from gateway.bodies import StrictJSONRoute
from gateway.deps import get_node, get_principal
from gateway.metrics import render_metrics
from gateway.publish_limit import check_publish_rate
from gateway.responses import JSONBytes
from shared.auth import Principal
from shared.errors import HeraldError

router = APIRouter(route_class=StrictJSONRoute)

MAX_BATCH = 500
Scalar = str | int | float | bool


class PublishIn(BaseModel):
    """One message (SPEC §2). `id` makes the publish idempotent for 5 minutes."""

    # Strict: "30" and true are not numbers, as on the WebSocket (issue 9).
    model_config = ConfigDict(strict=True)

    topic: str = Field(examples=["game.12345.score"])
    data: Any = Field(default=None, examples=[{"home": 2, "away": 1}])
    attributes: dict[str, Scalar] | None = Field(default=None, examples=[{"gameId": "12345"}])
    id: str | None = None


class PublishOut(BaseModel):
    id: str
    offset: int | None = None


class BatchIn(BaseModel):
    model_config = ConfigDict(strict=True)
    # Entries stay loosely typed so that one bad entry is reported on its own
    # instead of failing the whole batch in validation.
    messages: list[Any] = Field(max_length=MAX_BATCH)


class BatchOut(BaseModel):
    results: list[dict[str, Any]]


def _result(outcome: PublishOutcome | HeraldError) -> dict[str, Any]:
    if isinstance(outcome, HeraldError):
        return {"error": outcome.to_dict()}
    out: dict[str, Any] = {"id": outcome.id}
    if outcome.offset is not None:
        out["offset"] = outcome.offset
    return out


NodeDep = Annotated[Node, Depends(get_node)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


@router.post("/v1/publish", status_code=202, response_model=PublishOut, tags=["topics"])
async def publish(
    request: Request, body: PublishIn, node: NodeDep, principal: PrincipalDep
) -> JSONBytes:
    """Publish one message to a topic."""
    check_publish_rate(request, node, principal, 1)
    (outcome,) = await node.publish([body.model_dump(exclude_unset=True)], principal)
    if isinstance(outcome, HeraldError):
        raise outcome
    return JSONBytes(_result(outcome), status_code=202)


@router.post("/v1/publish/batch", status_code=202, response_model=BatchOut, tags=["topics"])
async def publish_batch(
    request: Request, body: BatchIn, node: NodeDep, principal: PrincipalDep
) -> JSONBytes:
    """Publish up to 500 messages; each entry gets its own result or error."""
    check_publish_rate(request, node, principal, len(body.messages))
    outcomes = await node.publish(body.messages, principal)
    return JSONBytes({"results": [_result(o) for o in outcomes]}, status_code=202)


@router.get("/v1/topics/{topic}/history", tags=["topics"])
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


@router.get("/readyz", tags=["operations"])
async def readyz(node: NodeDep) -> JSONBytes:
    """Ready for traffic: the backplane is reachable and the process is not draining."""
    checks = {"backplane": node.backplane.ready(), "draining": node.draining}
    if node.queues is not None:
        checks["queues"] = await node.queues.ping()
    ok = checks["backplane"] and not node.draining and checks.get("queues", True)
    return JSONBytes({"ready": ok, **checks}, status_code=200 if ok else 503)


@router.get("/metrics", tags=["operations"])
async def metrics(request: Request, node: NodeDep) -> Response:
    """Prometheus text format."""
    body, content_type = await render_metrics(node, request.app.state.edge)
    return Response(body, media_type=content_type)


@router.get("/v1/stats", tags=["operations"])
async def stats(request: Request, node: NodeDep) -> JSONBytes:
    """Engine counters, connections and queue stats as JSON."""
    out = node.stats()
    edge = request.app.state.edge
    out["connections"] = edge.connection_count
    out["connections_total"] = edge.connections_total
    if node.queues is not None:
        out["queues"] = await node.queues.stats()
    return JSONBytes(out)

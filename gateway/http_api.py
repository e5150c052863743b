"""HTTP API for publishers and operators (SPEC §5): thin handlers over the node."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from fanout.backplane import PublishOutcome
from fanout.node import MAX_OFFSET, Node
from gateway.bodies import StrictJSONRoute
from gateway.deps import get_node, get_principal
from gateway.metrics import render_metrics
from gateway.responses import JSONBytes
from shared.auth import Principal
from shared.errors import HeraldError, RateLimited
from shared.ratelimit import TokenBucket

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


class PublishLimiter:
    """A token bucket per caller (API key or JWT subject) for HTTP publishes.

    A publish costs one token per message (a batch at most `burst`, so that a full
    batch always fits an idle bucket). Buckets idle long enough to be full again are
    forgotten when the table grows, so memory follows the active callers only.
    """

    MAX_IDLE_CALLERS = 10_000

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[TokenBucket, list[float]]] = {}

    def check(self, caller: str, cost: int, now: float) -> None:
        """Spend `cost` tokens of `caller`, or raise `RateLimited` (429)."""
        entry = self._buckets.get(caller)
        if entry is None:
            if len(self._buckets) >= self.MAX_IDLE_CALLERS:
                self._forget_idle(now)
            entry = self._buckets[caller] = (TokenBucket(self.rate, self.burst), [now])
        bucket, last = entry
        last[0] = now
        wait = bucket.take(now, min(cost, self.burst))
        if wait > 0:
            raise RateLimited(
                f"over {self.rate:g} messages/s for this caller; retry in {wait:.2f} s",
                details={"retry_after_s": round(wait, 3)},
            )

    def _forget_idle(self, now: float) -> None:
        refill = self.burst / self.rate
        for caller in [c for c, (_, last) in self._buckets.items() if now - last[0] > refill]:
            del self._buckets[caller]


def _check_publish_rate(request: Request, node: Node, principal: Principal, cost: int) -> None:
    state = request.app.state
    limiter: PublishLimiter | None = getattr(state, "publish_limiter", None)
    if limiter is None:
        limits = node.settings.publish_rate()
        if limits is None:
            return
        limiter = state.publish_limiter = PublishLimiter(*limits)
    limiter.check(principal.sub, cost, time.monotonic())


@router.post("/v1/publish", status_code=202, response_model=PublishOut, tags=["topics"])
async def publish(
    request: Request, body: PublishIn, node: NodeDep, principal: PrincipalDep
) -> JSONBytes:
    """Publish one message to a topic."""
    _check_publish_rate(request, node, principal, 1)
    (outcome,) = await node.publish([body.model_dump(exclude_unset=True)], principal)
    if isinstance(outcome, HeraldError):
        raise outcome
    return JSONBytes(_result(outcome), status_code=202)


@router.post("/v1/publish/batch", status_code=202, response_model=BatchOut, tags=["topics"])
async def publish_batch(
    request: Request, body: BatchIn, node: NodeDep, principal: PrincipalDep
) -> JSONBytes:
    """Publish up to 500 messages; each entry gets its own result or error."""
    _check_publish_rate(request, node, principal, len(body.messages))
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

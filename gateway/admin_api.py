"""HTTP APIs behind the admin console (gateway/static/admin): presence, a topics
overview and a read-only peek at queue messages. Queue stats, redrive, purge and
subscriptions are in gateway/queues_api.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from fanout.node import Node
from gateway.deps import get_node, get_principal, require_admin
from gateway.openapi import AUTH, errors
from gateway.queues_api import Queues
from shared.auth import Principal
from shared.topics import validate_pattern

router = APIRouter()

NodeDep = Annotated[Node, Depends(get_node)]


class PresenceOut(BaseModel):
    topic: str
    subscribers: int = Field(description="subscriptions receiving this topic, on every pod")
    pods: int = Field(description="gateway processes counted")
    patterns: dict[str, int] = Field(description="subscriptions per matching pattern")


class TopicPresence(BaseModel):
    pattern: str
    subscribers: int
    messages: int = Field(description="messages matched since the pods started (for rates)")


class TopicsOut(BaseModel):
    pods: int
    auth: bool = Field(description="whether authentication is on")
    topics: list[TopicPresence]
    history: list[dict[str, Any]] = Field(description="history rules, first match wins")
    totals: dict[str, int] = Field(
        description="connections, subscriptions, messages_published, messages_delivered,"
        " messages_dropped: summed over every pod (counters since each pod started)"
    )


class PeekOut(BaseModel):
    messages: list[dict[str, Any]] = Field(
        description="{id, body, attributes, receive_count, sent_at, source}, oldest first"
    )


@router.get(
    "/v1/topics/{topic}/presence",
    response_model=PresenceOut,
    tags=["topics"],
    responses=errors(400, *AUTH, 503),
)
async def presence(
    topic: str, node: NodeDep, principal: Annotated[Principal, Depends(get_principal)]
) -> dict[str, Any]:
    """How many subscriptions receive `topic` (a concrete topic: every pattern
    matching it; a wildcard pattern: that pattern), summed over every pod."""
    validate_pattern(topic)
    principal.check_subscribe(topic)
    snap = await node.presence.snapshot()
    total, per_pattern = snap.for_topic(topic)
    return {"topic": topic, "subscribers": total, "pods": snap.pods, "patterns": per_pattern}


@router.get(
    "/v1/topics",
    response_model=TopicsOut,
    tags=["topics"],
    responses=errors(*AUTH, 503),
    dependencies=[Depends(require_admin)],
)
async def topics(node: NodeDep) -> dict[str, Any]:
    """Every subscribed pattern with its subscribers (all pods), and the history rules."""
    snap = await node.presence.snapshot()
    rows = [
        {"pattern": p, "subscribers": v.subscribers, "messages": v.messages}
        for p, v in sorted(snap.patterns.items())
    ]
    rules = [r.model_dump(exclude_none=True) for r in node.settings.history]
    return {
        "pods": snap.pods,
        "auth": node.auth.enabled,
        "topics": rows,
        "history": rules,
        "totals": snap.totals,
    }


@router.get(
    "/v1/queues/{name}/peek",
    response_model=PeekOut,
    tags=["queues"],
    responses=errors(400, *AUTH, 404, 503),
    dependencies=[Depends(require_admin)],
)
async def peek(
    name: str, svc: Queues, limit: Annotated[int, Query(alias="max", ge=1, le=100)] = 10
) -> dict[str, Any]:
    """The oldest messages of a queue (e.g. a dead-letter queue) without receiving them."""
    return {"messages": await svc.peek(name, limit)}

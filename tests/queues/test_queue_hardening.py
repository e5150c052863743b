"""Issue 9 regressions of the queue engine: degenerate patterns, cycles, dead queues."""

from __future__ import annotations

from typing import Any

from fanout.message import Message
from fanout.queues import QueueService


async def drain(svc: QueueService, name: str) -> list[dict[str, Any]]:
    msgs = await svc.receive(name, max=100)
    if msgs:
        await svc.ack(name, [m["receipt"] for m in msgs])
    return msgs


async def test_subscription_on_bare_wildcard_alone_enqueues(svc: QueueService) -> None:
    # `>` is the only pattern: the index must still search its root.
    await svc.create_or_update("everything", {})
    await svc.create_subscription(">", "everything", None)
    await svc.on_publish([Message.build("rt.a", "m1", 1, {"n": 1}, {})])
    [got] = await drain(svc, "everything")
    assert got["body"]["id"] == "m1"

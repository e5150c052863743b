"""Issue 9 regressions of the queue engine: degenerate patterns, cycles, dead queues."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fanout.message import Message
from fanout.queues import QueueConsumer, QueueService
from shared.errors import InvalidRequest


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


async def test_dead_letter_cycles_are_refused(svc: QueueService) -> None:
    for name in ("a", "b", "c"):
        await svc.create_or_update(name, {})
    await svc.create_or_update("a", {"dead_letter": {"queue": "b", "max_receive_count": 1}})
    with pytest.raises(InvalidRequest) as direct:
        await svc.create_or_update("b", {"dead_letter": {"queue": "a", "max_receive_count": 1}})
    assert direct.value.status == 400 and direct.value.code == "invalid_request"
    assert direct.value.details == {"cycle": ["b", "a", "b"]}
    await svc.create_or_update("b", {"dead_letter": {"queue": "c", "max_receive_count": 1}})
    with pytest.raises(InvalidRequest, match="c -> a -> b -> c"):
        await svc.create_or_update("c", {"dead_letter": {"queue": "a", "max_receive_count": 1}})
    assert (await svc.get("c"))["dead_letter"] is None
    # A chain that merely ends, or joins another chain, is fine.
    await svc.create_or_update("d", {"dead_letter": {"queue": "b", "max_receive_count": 1}})


async def test_an_unsendable_job_does_not_spin_the_consumer(svc: QueueService) -> None:
    """A job the socket cannot take stays hidden until its visibility timeout (the fake
    clock never gets there), instead of being released and received again at once."""
    await svc.create_or_update("stuck", {})
    await svc.send("stuck", {"body": 1})
    attempts = 0

    def send_job(job: dict[str, Any]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:  # later attempts succeed, so a spinning consumer stops
            raise TypeError("cannot encode")

    consumer = QueueConsumer(svc, "stuck", 5, None, send_job)
    await consumer.start()
    try:
        await asyncio.sleep(0.3)
    finally:
        await consumer.close()
    assert attempts == 1
    assert (await svc.get("stuck"))["received_total"] == 1

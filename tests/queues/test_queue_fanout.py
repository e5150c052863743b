"""Topic→queue subscriptions (SNS→SQS) and WebSocket queue consumers, on both stores."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from queue_helpers import FakeClock, make_service

from fanout.message import Message
from fanout.queues import QueueConsumer, QueueService
from procs import MS, RedisServer, after, until
from shared.errors import InvalidFilter, InvalidTopic, NotFound, QueueNotFound

POLICIES: dict[str, dict[str, Any]] = {
    "inventory": {"eventType": ["order.created", "order.cancelled"]},
    "shipping": {"eventType": ["order.created"], "shippingRequired": [True]},
    "fraud": {"eventType": ["order.created"], "total": [{"numeric": [">=", 1000]}]},
}


async def drain(svc: QueueService, name: str) -> list[dict[str, Any]]:
    msgs = await svc.receive(name, max=100)
    if msgs:
        await svc.ack(name, [m["receipt"] for m in msgs])
    return msgs


def order(n: int, topic: str, **attrs: Any) -> Message:
    return Message.build(topic, f"m{n}", 1_700_000_000_000 + n, {"order": n}, attrs)


async def test_sns_to_sqs_filter_policies(svc: QueueService) -> None:
    for name, policy in POLICIES.items():
        await svc.create_or_update(name, {})
        await svc.create_subscription("orders.>", name, policy)
    msgs = [
        order(1, "orders.eu.created", eventType="order.created", shippingRequired=True, total=1500),
        order(2, "orders.us", eventType="order.created", shippingRequired=False, total=50),
        order(3, "orders.x", eventType="order.cancelled", total=5000),
        order(4, "orders.y", eventType="order.shipped", shippingRequired=True),
        order(5, "payments.z", eventType="order.created", total=2000, shippingRequired=True),
        order(6, "orders.z", eventType="order.created", shippingRequired=True),
    ]
    await svc.on_publish(msgs[:3])
    await svc.on_publish(msgs[3:])
    got = {name: await drain(svc, name) for name in POLICIES}
    assert {n: [m["body"]["id"] for m in ms] for n, ms in got.items()} == {
        "inventory": ["m1", "m2", "m3", "m6"],
        "shipping": ["m1", "m6"],
        "fraud": ["m1"],
    }
    first = got["fraud"][0]
    assert first["body"] == msgs[0].as_dict()  # the topic envelope
    assert first["attributes"] == {
        "eventType": "order.created",
        "shippingRequired": True,
        "total": 1500,
    }


async def test_subscription_crud_and_validation(svc: QueueService) -> None:
    await svc.create_or_update("audit", {})
    sub = await svc.create_subscription("game.*.score", "audit", None)
    again = await svc.create_subscription("game.*.score", "audit", None)
    assert again["id"] == sub["id"]  # the same subscription twice is one subscription
    other = await svc.create_subscription("game.>", "audit", {"vip": [{"exists": True}]})
    listed = {s["id"]: s for s in await svc.list_subscriptions()}
    assert set(listed) == {sub["id"], other["id"]}
    assert listed[other["id"]] | {"created_at": 0} == {
        "id": other["id"],
        "topic": "game.>",
        "queue": "audit",
        "filter_policy": {"vip": [{"exists": True}]},
        "created_at": 0,
    }
    with pytest.raises(InvalidTopic):
        await svc.create_subscription("game..x", "audit", None)
    with pytest.raises(InvalidFilter):
        await svc.create_subscription("game.>", "audit", {"a": [{"bogus": 1}]})
    with pytest.raises(QueueNotFound):
        await svc.create_subscription("game.>", "missing", None)
    await svc.delete_subscription(sub["id"])
    with pytest.raises(NotFound) as err:
        await svc.delete_subscription(sub["id"])
    assert err.value.code == "subscription_not_found"
    # Deleting the queue drops its subscriptions; publishing then enqueues nowhere.
    await svc.delete("audit")
    assert await svc.list_subscriptions() == []
    await svc.on_publish([order(1, "game.1.score", vip=True)])


async def test_fanout_to_fifo_queue_keeps_topic_order(svc: QueueService) -> None:
    await svc.create_or_update("scores.fifo", {})
    await svc.create_subscription("game.>", "scores.fifo", None)
    await svc.on_publish([order(i, f"game.{i % 2}", seq=i) for i in range(6)])
    await svc.on_publish([order(0, "game.0", seq=0)])  # same id again: deduplicated
    first = await svc.receive("scores.fifo", max=10)
    assert [m["body"]["id"] for m in first] == ["m0", "m1"]  # one in flight per topic
    await svc.ack("scores.fifo", [m["receipt"] for m in first])
    seen = [m["body"]["id"] for m in first]
    while batch := await drain(svc, "scores.fifo"):
        seen += [m["body"]["id"] for m in batch]
    assert seen == ["m0", "m1", "m2", "m3", "m4", "m5"]


async def test_fanout_refused_by_full_queue_is_counted_not_raised(svc: QueueService) -> None:
    await svc.create_or_update("full", {"max_depth": 1})
    await svc.create_or_update("roomy", {})
    await svc.create_subscription("t.>", "full", None)
    await svc.create_subscription("t.>", "roomy", None)
    await svc.on_publish([order(1, "t.a")])
    await svc.on_publish([order(2, "t.a")])  # "full" refuses: the publish is not failed
    assert [m["body"]["id"] for m in await drain(svc, "roomy")] == ["m1", "m2"]
    assert [m["body"]["id"] for m in await drain(svc, "full")] == ["m1"]
    assert svc.fanout_refused == {"full": 1}


async def test_consumer_prefetch_and_release_on_close(svc: QueueService, clock: FakeClock) -> None:
    await svc.create_or_update("jobs", {"visibility_timeout": 300})
    await svc.send_batch("jobs", [{"body": i} for i in range(10)])
    jobs: list[dict[str, Any]] = []
    consumer = QueueConsumer(svc, "jobs", prefetch=3, visibility_timeout=None, send_job=jobs.append)
    await consumer.start()
    try:
        await until(lambda: len(jobs) == 3)
        await asyncio.sleep(200 * MS)  # a fourth job would have come by now
        assert len(jobs) == 3 and consumer.outstanding == 3
        assert jobs[0] | {"receipt": "", "msg_id": "", "sent_at": 0} == {
            "op": "job",
            "queue": "jobs",
            "receipt": "",
            "msg_id": "",
            "body": 0,
            "attributes": {},
            "receive_count": 1,
            "sent_at": 0,
        }
        assert consumer.owns(jobs[0]["receipt"])
        [res] = await consumer.ack([jobs[0]["receipt"]])
        assert res["ok"] is True
        await until(lambda: len(jobs) == 4)
        await consumer.nack(jobs[1]["receipt"])
        await until(lambda: len(jobs) == 5)
        await consumer.extend(jobs[2]["receipt"], 600)
        assert (await svc.get("jobs"))["in_flight"] == 3
    finally:
        await consumer.close()
    stats = await svc.get("jobs")
    assert stats["in_flight"] == 0 and stats["visible"] == 9  # released AT ONCE
    # The nacked job came straight back as jobs[4]; jobs[2:] were unacked at close.
    assert jobs[4]["msg_id"] == jobs[1]["msg_id"] and jobs[4]["receive_count"] == 2
    again = {m["id"]: m["receive_count"] for m in await svc.receive("jobs", max=100)}
    for job in jobs[2:]:
        assert again[job["msg_id"]] == job["receive_count"] + 1


async def test_consumer_frees_slot_when_visibility_runs_out(
    svc: QueueService, clock: FakeClock
) -> None:
    await svc.create_or_update("jobs", {})
    await svc.send_batch("jobs", [{"body": i} for i in range(2)])
    jobs: list[dict[str, Any]] = []
    consumer = QueueConsumer(svc, "jobs", 1, 10, jobs.append)
    await consumer.start()
    try:
        await until(lambda: len(jobs) == 1)
        clock.advance(11)  # the client never acked: the job is no longer ours
        await until(lambda: len(jobs) == 2)
        assert consumer.outstanding == 1
    finally:
        await consumer.close()


async def test_consumer_rejects_unknown_queue(svc: QueueService) -> None:
    with pytest.raises(QueueNotFound):
        await QueueConsumer(svc, "nope", 1, None, lambda job: None).start()


# ---- several processes on one Redis -------------------------------------------------------


async def test_redis_processes_share_wakeups_and_subscriptions(
    shared_redis: RedisServer, tmp_path: Path, clock: FakeClock
) -> None:
    ns = f"shared{uuid.uuid4().hex[:8]}"
    a = make_service("redis", shared_redis.url, tmp_path, clock, namespace=ns)
    b = make_service("redis", shared_redis.url, tmp_path, clock, namespace=ns)
    await a.start()
    await b.start()
    try:
        await a.create_or_update("jobs", {})
        # Each listener SUBSCRIBEs the change channel right after PSUBSCRIBE to the wake-ups.
        channel = a.keys.subscriptions_channel
        await until(
            lambda: shared_redis.cli("PUBSUB", "NUMSUB", channel).split()[-1] == "2",
            "both listeners subscribed",
        )

        sender = after(100 * MS, lambda: a.send("jobs", {"body": "from a"}))
        started = time.monotonic()
        msgs = await b.receive("jobs", wait=5)
        await sender
        assert [m["body"] for m in msgs] == ["from a"]
        assert time.monotonic() - started < 2000 * MS

        await a.create_subscription("news.>", "jobs", None)
        await until(lambda: bool(b._subs), "b hears of the new subscription")
        await b.on_publish([order(1, "news.x")])
        assert [m["body"]["id"] for m in await drain(a, "jobs")] == ["m1"]
    finally:
        await a.close()
        await b.close()

"""What the SNS API keeps in the queue store, on every store: the topic registry,
subscription options (SNS envelopes, raw delivery, body-scope filters) and queue maps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from queue_helpers import FakeClock, make_service

from fanout.message import Message
from fanout.queues import QueueService
from fanout.queues.sns_delivery import SNS_META

ARN = "arn:aws:sns:us-east-1:000000000000:events"


def published(n: int, data: Any, **attrs: Any) -> Message:
    return Message.build("events", f"m{n}", 1_700_000_000_000 + n, data, attrs)


async def bodies(svc: QueueService, name: str) -> list[Any]:
    msgs = await svc.receive(name, max=100)
    return [m["body"] for m in msgs]


async def test_topic_registry_round_trip(svc: QueueService) -> None:
    assert await svc.sns_topics() == {}
    await svc.put_sns_topic("events", {"attributes": {"DisplayName": "x"}, "tags": {}})
    await svc.put_sns_topic("other.fifo", {"attributes": {"FifoTopic": "true"}})
    topics = await svc.sns_topics()
    assert topics["events"]["attributes"] == {"DisplayName": "x"}
    assert set(topics) == {"events", "other.fifo"}
    assert await svc.delete_sns_topic("events")
    assert not await svc.delete_sns_topic("events")
    assert set(await svc.sns_topics()) == {"other.fifo"}


async def test_envelope_raw_and_body_scope_deliveries(svc: QueueService) -> None:
    for q in ("env", "raw", "body", "native"):
        await svc.create_or_update(q, {})
    env = await svc.create_subscription(
        "events", "env", {"price": [{"numeric": [">", 10]}]}, {"attributes": {}}
    )
    await svc.update_subscription(
        env["id"],
        {"price": [{"numeric": [">", 10]}]},
        {"attributes": {}, "topic_arn": ARN, "subscription_arn": ARN + ":1"},
    )
    await svc.create_subscription(
        "events", "raw", None, {"attributes": {"RawMessageDelivery": "true"}}
    )
    await svc.create_subscription(
        "events",
        "body",
        {"order.region": ["eu"]},
        {"attributes": {"FilterPolicyScope": "MessageBody"}},
    )
    await svc.create_subscription("events", "native", None)
    meta = orjson.dumps({"Subject": "hi", "Numbers": {"price": "20.0"}}).decode()
    await svc.on_publish(
        [
            published(1, json.dumps({"order": {"region": "eu"}}), price=20.0, **{SNS_META: meta}),
            published(2, json.dumps({"order": {"region": "us"}}), price=5),
        ]
    )
    (envelope,) = [json.loads(b) for b in await bodies(svc, "env")]
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == ARN
    assert envelope["Subject"] == "hi" and envelope["MessageId"] == "m1"
    assert envelope["MessageAttributes"] == {"price": {"Type": "Number", "Value": "20.0"}}
    raw = await svc.receive("raw", max=10)
    assert sorted(m["body"] for m in raw) == sorted(
        [json.dumps({"order": {"region": "eu"}}), json.dumps({"order": {"region": "us"}})]
    )
    assert {m["attributes"]["price"] for m in raw} == {"20.0", "5"}
    assert all("AWS.DataTypes" in m["attributes"] for m in raw)  # Number is not String
    got = [json.loads(json.loads(b)["Message"]) for b in await bodies(svc, "body")]
    assert got == [{"order": {"region": "eu"}}]
    native = await bodies(svc, "native")
    assert [b["id"] for b in native] == ["m1", "m2"]  # native subscriptions keep envelopes
    listed = {s["queue"]: s for s in await svc.list_subscriptions()}
    assert "options" not in listed["native"]
    assert listed["env"]["options"]["topic_arn"] == ARN


async def test_options_survive_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    first = make_service("sqlite", "", tmp_path, clock)
    await first.start()
    await first.create_or_update("q", {"tags": {"team": "a"}, "aws": {"Policy": "{}"}})
    sub = await first.create_subscription("events", "q", None, {"attributes": {"x": "1"}})
    await first.close()
    again = make_service("sqlite", "", tmp_path, clock)
    await again.start()
    try:
        info = await again.get("q")
        assert info["tags"] == {"team": "a"} and info["aws"] == {"Policy": "{}"}
        (listed,) = await again.list_subscriptions()
        assert listed["id"] == sub["id"] and listed["options"] == {"attributes": {"x": "1"}}
    finally:
        await again.close()


async def test_a_deeply_nested_body_is_bounded_work(svc: QueueService) -> None:
    await svc.create_or_update("deep", {})
    await svc.create_subscription(
        "events", "deep", {"a.b": ["x"]}, {"attributes": {"FilterPolicyScope": "MessageBody"}}
    )
    # 1,000 levels: within orjson's limit, past the interpreter's recursion limit.
    deep = '{"a":' * 1000 + '"x"' + "}" * 1000
    await svc.on_publish([published(1, deep)])
    await svc.on_publish([published(2, json.dumps({"a": {"b": "x"}}))])
    got = await bodies(svc, "deep")
    assert [json.loads(json.loads(b)["Message"]) for b in got] == [{"a": {"b": "x"}}]


async def test_forged_sns_meta_is_only_data(svc: QueueService) -> None:
    """`AWS.SNS` from a native publisher: bad fields are dropped, never a failed publish
    or a group id the store cannot hold."""
    await svc.create_or_update("forged.fifo", {})
    await svc.create_subscription("events", "forged.fifo", None, {"attributes": {}})
    for meta in (
        '{"Types": 5, "Numbers": [1], "Subject": 7, "GroupId": "a\\u0000b", "DedupId": ""}',
        '{"Types": {"p": "Bogus"}, "GroupId": "' + "g" * 500 + '"}',
        "[1]",
        "{bad",
    ):
        await svc.on_publish([published(len(meta), "m", p=1, **{SNS_META: meta})])
    msgs = await svc.receive("forged.fifo", max=10)
    assert len(msgs) == 1  # one FIFO group (the topic): one message at a time
    assert json.loads(msgs[0]["body"])["MessageAttributes"]["p"] == {"Type": "Number", "Value": "1"}

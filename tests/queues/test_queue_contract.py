"""The QueueService contract (docs/queues.md), run against both stores with a fake clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from queue_helpers import FakeClock

from fanout.queues import QueueService
from procs import MS, after
from shared.errors import (
    InvalidRequest,
    PayloadTooLarge,
    QueueFull,
    QueueNotFound,
    ReceiptInvalid,
)


async def receive_all(svc: QueueService, name: str, **kw: Any) -> list[dict[str, Any]]:
    return await svc.receive(name, max=100, **kw)


async def bodies_acked(svc: QueueService, name: str) -> list[Any]:
    msgs = await receive_all(svc, name)
    if msgs:
        await svc.ack(name, [m["receipt"] for m in msgs])
    return [m["body"] for m in msgs]


async def work_with_dlq(svc: QueueService, visibility_timeout: int, max_receive_count: int) -> None:
    """Queues `dlq` and `work`, whose dead letters go to `dlq`."""
    await svc.create_or_update("dlq", {})
    dead_letter = {"queue": "dlq", "max_receive_count": max_receive_count}
    await svc.create_or_update(
        "work", {"visibility_timeout": visibility_timeout, "dead_letter": dead_letter}
    )


# ---- queues ---------------------------------------------------------------------------


async def test_create_get_update_list_delete(svc: QueueService) -> None:
    created = await svc.create_or_update("jobs", {"visibility_timeout": 10})
    assert created["visibility_timeout"] == 10
    assert created["retention"] == 345_600 and created["max_message_bytes"] == 262_144
    assert created["fifo"] is False and created["dead_letter"] is None
    await svc.create_or_update("jobs", {"delay": 5})  # a PUT keeps what it does not name
    got = await svc.get("jobs")
    assert got["visibility_timeout"] == 10 and got["delay"] == 5
    for key in (
        "visible",
        "in_flight",
        "delayed",
        "oldest_age_s",
        "sent_total",
        "received_total",
        "deleted_total",
        "dead_lettered_total",
    ):
        assert got[key] == 0
    await svc.create_or_update("other", {})
    assert [q["name"] for q in await svc.list_queues()] == ["jobs", "other"]
    await svc.delete("jobs")
    with pytest.raises(QueueNotFound):
        await svc.get("jobs")
    with pytest.raises(QueueNotFound):
        await svc.delete("jobs")


@pytest.mark.parametrize(
    ("name", "attrs"),
    [
        ("bad name", {}),
        ("x" * 81, {}),
        ("jobs", {"visibility_timeout": 43_201}),
        ("jobs", {"delay": 901}),
        ("jobs", {"retention": 59}),
        ("jobs", {"fifo": True}),  # fifo needs the .fifo suffix
        ("jobs.fifo", {"fifo": False}),
        ("jobs", {"content_dedup": True}),
        ("jobs", {"dead_letter": {"queue": "missing", "max_receive_count": 3}}),
        ("jobs", {"dead_letter": {"queue": "jobs", "max_receive_count": 3}}),
        ("jobs", {"colour": "blue"}),
    ],
)
async def test_invalid_queue_attributes(
    svc: QueueService, name: str, attrs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequest):
        await svc.create_or_update(name, attrs)


async def test_unknown_queue_is_404_everywhere(svc: QueueService) -> None:
    calls = [
        svc.get("nope"),
        svc.send("nope", {"body": 1}),
        svc.receive("nope"),
        svc.ack("nope", ["a.b"]),
        svc.purge("nope"),
        svc.redrive("nope"),
        svc.change_visibility("nope", "a.b", 5),
        svc.nack("nope", "a.b"),
    ]
    for call in calls:
        with pytest.raises(QueueNotFound):
            await call


# ---- send / receive / ack -------------------------------------------------------------------


async def test_send_receive_ack(svc: QueueService, clock: FakeClock) -> None:
    await svc.create_or_update("jobs", {})
    sent = await svc.send("jobs", {"body": {"n": 1}, "attributes": {"kind": "a", "n": 2}})
    [msg] = await svc.receive("jobs")
    assert msg["id"] == sent["id"]
    assert msg["body"] == {"n": 1} and msg["attributes"] == {"kind": "a", "n": 2}
    assert msg["receive_count"] == 1
    assert msg["sent_at"] == msg["first_received_at"] == int(clock() * 1000)
    stats = await svc.get("jobs")
    assert (stats["visible"], stats["in_flight"], stats["received_total"]) == (0, 1, 1)
    assert await svc.ack("jobs", [msg["receipt"], "junk"]) == [
        {"receipt": msg["receipt"], "ok": True},
        {"receipt": "junk", "error": {"code": "receipt_invalid", "message": "malformed receipt"}},
    ]
    stats = await svc.get("jobs")
    assert (stats["in_flight"], stats["sent_total"], stats["deleted_total"]) == (0, 1, 1)
    assert await svc.receive("jobs") == []


async def test_visibility_expiry_redelivers_with_rising_count(
    svc: QueueService, clock: FakeClock
) -> None:
    await svc.create_or_update("jobs", {"visibility_timeout": 30})
    await svc.send("jobs", {"body": "x"})
    [first] = await svc.receive("jobs")
    clock.advance(29)
    assert await svc.receive("jobs") == []
    clock.advance(2)
    [second] = await svc.receive("jobs")
    assert second["id"] == first["id"] and second["receive_count"] == 2
    assert second["receipt"] != first["receipt"]
    assert second["first_received_at"] == first["first_received_at"]
    # The older receipt is dead: ack, extend and nack all reject it.
    [res] = await svc.ack("jobs", [first["receipt"]])
    assert res["error"]["code"] == "receipt_invalid"
    with pytest.raises(ReceiptInvalid):
        await svc.change_visibility("jobs", first["receipt"], 60)
    with pytest.raises(ReceiptInvalid):
        await svc.nack("jobs", first["receipt"])
    assert (await svc.ack("jobs", [second["receipt"]]))[0]["ok"] is True


async def test_receive_visibility_override_and_change_visibility(
    svc: QueueService, clock: FakeClock
) -> None:
    await svc.create_or_update("jobs", {})
    await svc.send("jobs", {"body": 1})
    [m] = await svc.receive("jobs", visibility_timeout=5)
    clock.advance(4)
    await svc.change_visibility("jobs", m["receipt"], 10)  # counts from now
    clock.advance(9)
    assert await svc.receive("jobs") == []
    await svc.change_visibility("jobs", m["receipt"], 0)  # release now
    [again] = await svc.receive("jobs")
    assert again["receive_count"] == 2
    with pytest.raises(ReceiptInvalid):
        await svc.change_visibility("jobs", m["receipt"], 10)


async def test_nack_with_delay(svc: QueueService, clock: FakeClock) -> None:
    await svc.create_or_update("jobs", {})
    await svc.send("jobs", {"body": 1})
    [m] = await svc.receive("jobs")
    await svc.nack("jobs", m["receipt"], delay=20)
    stats = await svc.get("jobs")
    assert (stats["visible"], stats["in_flight"], stats["delayed"]) == (0, 0, 1)
    clock.advance(19)
    assert await svc.receive("jobs") == []
    clock.advance(1)
    [again] = await svc.receive("jobs")
    assert again["receive_count"] == 2
    with pytest.raises(ReceiptInvalid):  # nack invalidated the receipt
        await svc.nack("jobs", m["receipt"])


async def test_delay_queue_and_message(svc: QueueService, clock: FakeClock) -> None:
    await svc.create_or_update("jobs", {"delay": 10})
    await svc.send("jobs", {"body": "queue-delay"})
    await svc.send("jobs", {"body": "now", "delay": 0})
    await svc.send("jobs", {"body": "later", "delay": 60})
    assert await bodies_acked(svc, "jobs") == ["now"]
    assert (await svc.get("jobs"))["delayed"] == 2
    clock.advance(10)
    assert await bodies_acked(svc, "jobs") == ["queue-delay"]
    clock.advance(50)
    assert await bodies_acked(svc, "jobs") == ["later"]
    with pytest.raises(InvalidRequest):
        await svc.send("jobs", {"body": 1, "delay": 901})


async def test_priority_orders_visible_messages(svc: QueueService) -> None:
    await svc.create_or_update("jobs", {})
    for body, prio in [("a", 0), ("b", 5), ("c", 9), ("d", 5), ("e", 0)]:
        await svc.send("jobs", {"body": body, "priority": prio})
    assert [m["body"] for m in await svc.receive("jobs", max=2)] == ["c", "b"]
    assert [m["body"] for m in await receive_all(svc, "jobs")] == ["d", "a", "e"]
    with pytest.raises(InvalidRequest):
        await svc.send("jobs", {"body": 1, "priority": 10})


async def test_retention_expires_messages(svc: QueueService, clock: FakeClock) -> None:
    await svc.create_or_update("jobs", {"retention": 60})
    await svc.send("jobs", {"body": "old"})
    [m] = await svc.receive("jobs", visibility_timeout=0)
    clock.advance(30)
    await svc.send("jobs", {"body": "young"})
    assert (await svc.get("jobs"))["oldest_age_s"] == 30
    clock.advance(31)
    stats = await svc.get("jobs")
    assert stats["visible"] == 1 and stats["oldest_age_s"] == 31
    assert [x["body"] for x in await receive_all(svc, "jobs")] == ["young"]
    assert (await svc.ack("jobs", [m["receipt"]]))[0]["error"]["code"] == "receipt_invalid"


async def test_dedup_window(svc: QueueService, clock: FakeClock) -> None:
    await svc.create_or_update("jobs", {})
    first = await svc.send("jobs", {"body": 1, "dedup_id": "order-7"})
    clock.advance(299)
    assert await svc.send("jobs", {"body": 2, "dedup_id": "order-7"}) == first
    assert (await svc.get("jobs"))["visible"] == 1
    clock.advance(2)
    later = await svc.send("jobs", {"body": 3, "dedup_id": "order-7"})
    assert later != first
    assert [m["body"] for m in await receive_all(svc, "jobs")] == [1, 3]


async def test_purge(svc: QueueService) -> None:
    await svc.create_or_update("jobs", {})
    await svc.send_batch("jobs", [{"body": i} for i in range(5)])
    [m] = await svc.receive("jobs")
    assert await svc.purge("jobs") == 5
    stats = await svc.get("jobs")
    assert (stats["visible"], stats["in_flight"]) == (0, 0)
    assert await svc.receive("jobs") == []
    assert (await svc.ack("jobs", [m["receipt"]]))[0]["error"]["code"] == "receipt_invalid"
    await svc.send("jobs", {"body": "after"})
    assert [x["body"] for x in await receive_all(svc, "jobs")] == ["after"]


async def test_queue_full_and_payload_too_large(svc: QueueService) -> None:
    await svc.create_or_update("small", {"max_depth": 2, "max_message_bytes": 1024})
    await svc.send("small", {"body": 1})
    results = await svc.send_batch("small", [{"body": 2}, {"body": 3}])
    assert "id" in results[0] and results[1]["error"]["code"] == "queue_full"
    with pytest.raises(QueueFull):
        await svc.send("small", {"body": 4})
    [m] = await svc.receive("small")
    await svc.ack("small", [m["receipt"]])
    await svc.send("small", {"body": 5})  # room again
    await svc.create_or_update("small", {"max_depth": None})
    with pytest.raises(PayloadTooLarge):
        await svc.send("small", {"body": "x" * 2000})


async def test_batch_limits_and_per_entry_errors(svc: QueueService) -> None:
    await svc.create_or_update("jobs", {})
    with pytest.raises(InvalidRequest):
        await svc.send_batch("jobs", [{"body": i} for i in range(101)])
    with pytest.raises(InvalidRequest):
        await svc.send_batch("jobs", [])
    results = await svc.send_batch(
        "jobs", [{"body": 0}, {"body": 1, "priority": 42}, {"nobody": 1}, {"body": 3}]
    )
    assert "id" in results[0] and "id" in results[3]
    assert results[1]["error"]["code"] == results[2]["error"]["code"] == "invalid_request"
    assert [m["body"] for m in await receive_all(svc, "jobs")] == [0, 3]
    ok = await svc.send_batch("jobs", [{"body": i} for i in range(100)])
    assert all("id" in r for r in ok)
    got: list[Any] = []
    while batch := await svc.receive("jobs", max=100):
        got += [m["body"] for m in batch]
    assert got == list(range(100))
    with pytest.raises(InvalidRequest):
        await svc.receive("jobs", max=101)


# ---- dead letters -----------------------------------------------------------------------


async def test_dead_letter_after_max_receive_count_and_redrive(
    svc: QueueService, clock: FakeClock
) -> None:
    await work_with_dlq(svc, visibility_timeout=10, max_receive_count=2)
    sent = await svc.send("work", {"body": "poison", "attributes": {"k": "v"}})
    await svc.send("work", {"body": "fine"})
    for count in (1, 2):
        msgs = await receive_all(svc, "work")
        assert {m["receive_count"] for m in msgs} == {count}
        if fine := [m["receipt"] for m in msgs if m["body"] == "fine"]:
            await svc.ack("work", fine)
        clock.advance(11)
    # The third receive would exceed max_receive_count: the message moves instead.
    assert await receive_all(svc, "work") == []
    work, dlq = await svc.get("work"), await svc.get("dlq")
    assert work["dead_lettered_total"] == 1 and work["visible"] + work["in_flight"] == 0
    assert dlq["visible"] == 1
    [dead] = await svc.receive("dlq", visibility_timeout=0)
    assert dead["id"] == sent["id"] and dead["body"] == "poison"
    assert dead["attributes"] == {"k": "v"} and dead["receive_count"] == 1

    assert await svc.redrive("dlq") == 1
    assert (await svc.get("dlq"))["visible"] == 0
    [back] = await svc.receive("work")
    assert back["id"] == sent["id"] and back["receive_count"] == 1
    assert await svc.redrive("dlq") == 0


async def test_dead_letter_queue_deleted_keeps_delivering(
    svc: QueueService, clock: FakeClock
) -> None:
    await work_with_dlq(svc, visibility_timeout=1, max_receive_count=1)
    await svc.send("work", {"body": 1})
    assert len(await svc.receive("work")) == 1
    await svc.delete("dlq")
    clock.advance(2)
    # Nowhere to move it: never lost, delivered again.
    [m] = await svc.receive("work")
    assert m["body"] == 1


# ---- fifo ----------------------------------------------------------------------------------


async def test_fifo_groups_in_order_one_in_flight_each(svc: QueueService) -> None:
    await svc.create_or_update("orders.fifo", {"fifo": True})
    for body, group in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A"), ("b2", "B")]:
        await svc.send("orders.fifo", {"body": body, "group_id": group})
    first = await receive_all(svc, "orders.fifo")
    assert [m["body"] for m in first] == ["a1", "b1"]
    assert await receive_all(svc, "orders.fifo") == []  # both groups have one in flight
    by_body = {m["body"]: m for m in first}
    await svc.ack("orders.fifo", [by_body["a1"]["receipt"]])
    [a2] = await receive_all(svc, "orders.fifo")
    assert a2["body"] == "a2"
    await svc.nack("orders.fifo", by_body["b1"]["receipt"])
    [b1] = await receive_all(svc, "orders.fifo")
    assert b1["body"] == "b1" and b1["receive_count"] == 2
    await svc.ack("orders.fifo", [a2["receipt"], b1["receipt"]])
    assert [m["body"] for m in await receive_all(svc, "orders.fifo")] == ["a3", "b2"]


async def test_fifo_rules_and_content_dedup(svc: QueueService, clock: FakeClock) -> None:
    await svc.create_or_update("pay.fifo", {"content_dedup": True})
    with pytest.raises(InvalidRequest):
        await svc.send("pay.fifo", {"body": 1})  # group_id required
    with pytest.raises(InvalidRequest):
        await svc.send("pay.fifo", {"body": 1, "group_id": "g", "priority": 3})
    first = await svc.send("pay.fifo", {"body": {"amount": 5}, "group_id": "g"})
    assert await svc.send("pay.fifo", {"body": {"amount": 5}, "group_id": "g"}) == first
    other = await svc.send("pay.fifo", {"body": {"amount": 6}, "group_id": "g"})
    assert other != first
    clock.advance(301)
    assert await svc.send("pay.fifo", {"body": {"amount": 5}, "group_id": "g"}) != first
    with pytest.raises(InvalidRequest):
        await svc.send("plain", {"body": 1, "group_id": "g"})  # group_id is for fifo only


async def test_fifo_dead_letter_unblocks_group(svc: QueueService, clock: FakeClock) -> None:
    await svc.create_or_update("dead.fifo", {})
    await svc.create_or_update(
        "work.fifo",
        {"visibility_timeout": 5, "dead_letter": {"queue": "dead.fifo", "max_receive_count": 1}},
    )
    await svc.send("work.fifo", {"body": "m1", "group_id": "g"})
    await svc.send("work.fifo", {"body": "m2", "group_id": "g"})
    [m1] = await receive_all(svc, "work.fifo")
    assert m1["body"] == "m1"
    clock.advance(6)
    # m1 goes to the dead-letter queue and m2, now the head, is delivered in the same call.
    assert [m["body"] for m in await receive_all(svc, "work.fifo")] == ["m2"]
    assert [m["body"] for m in await receive_all(svc, "dead.fifo")] == ["m1"]


# ---- long polling -------------------------------------------------------------------------


async def test_long_poll_wakes_on_send(svc: QueueService) -> None:
    await svc.create_or_update("jobs", {})

    sender = after(100 * MS, lambda: svc.send("jobs", {"body": "hi"}))
    started = time.monotonic()
    msgs = await svc.receive("jobs", wait=5)
    elapsed = time.monotonic() - started
    await sender
    assert [m["body"] for m in msgs] == ["hi"]
    assert elapsed < 2000 * MS


async def test_long_poll_times_out_empty(svc: QueueService) -> None:
    await svc.create_or_update("jobs", {})
    started = time.monotonic()
    assert await svc.receive("jobs", wait=300 * MS) == []
    assert 250 * MS <= time.monotonic() - started < 2000 * MS


async def test_cancelled_receive_releases_what_it_claimed(svc: QueueService) -> None:
    await svc.create_or_update("jobs", {})
    waiter = asyncio.create_task(svc.receive("jobs", wait=5))
    await asyncio.sleep(50 * MS)  # parked in its long poll
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await svc.send("jobs", {"body": 1})
    assert len(await svc.receive("jobs")) == 1

"""Webhook subscriptions in the queue service: shared by gateways, idempotent, migrated."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from pathlib import Path

import pytest

from fanout.message import Message
from fanout.queues import open_queue_service
from fanout.queues.webhook_policy import parse_policy
from procs import RedisServer
from shared.errors import InvalidRequest


async def test_two_gateways_declaring_one_webhook_write_one_subscription(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    a = open_queue_service(engine="redis", data_dir=tmp_path, redis_url=redis_server.url)
    b = open_queue_service(engine="redis", data_dir=tmp_path, redis_url=redis_server.url)
    await a.start()
    await b.start()
    try:
        policy = {"numRetries": 2}
        subs = await asyncio.gather(
            *(
                svc.create_webhook_subscription(
                    "orders.>", "http://h/x", {"k": ["v"]}, delivery_policy=policy, secret="s"
                )
                for svc in (a, b)
            )
        )
        assert subs[0]["id"] == subs[1]["id"]
        assert [s["id"] for s in await a.list_subscriptions()] == [subs[0]["id"]]
        await b.on_publish([Message.build("orders.1", "m1", 1, {"n": 1}, {"k": "v"})])
        (hook,) = await a.webhook_subscriptions()
        msgs = await a.receive(hook.queue, max=10)
        assert [m["body"]["data"] for m in msgs] == [{"n": 1}]  # one copy, not two
        rules = [{"pattern": "orders.>", "size": 10, "ttl": None}]
        assert await a.set_history_rules(rules) == rules
        assert await b.history_rules() == rules  # shared by every gateway
        with pytest.raises(InvalidRequest):
            await a.set_history_rules([{"pattern": "bad..", "size": 1}])
        await a.delete_subscription(hook.id)
        assert await a.list_subscriptions() == []
        assert hook.queue not in await a.stats()  # its internal queue went with it
    finally:
        await a.close()
        await b.close()


async def test_redeclaring_a_webhook_changes_it_in_one_step(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Changing a webhook used to delete it and then write it again: two changes, and
    # between them another gateway could load, and publish against, a registry
    # without the subscription. One upsert is one change (one version bump).
    svc = open_queue_service(engine="redis", data_dir=tmp_path, redis_url=redis_server.url)
    await svc.start()
    try:
        declare = functools.partial(svc.create_webhook_subscription, "orders.>", "http://h/x", None)
        first = await declare(delivery_policy={"numRetries": 2})
        key = svc.keys.subscriptions_version  # type: ignore[attr-defined]
        before = int(await svc._redis.get(key))  # type: ignore[attr-defined]
        second = await declare(delivery_policy={"numRetries": 5})
        assert second["id"] == first["id"]
        assert int(await svc._redis.get(key)) == before + 1  # type: ignore[attr-defined]
        (hook,) = await svc.webhook_subscriptions()
        assert hook.webhook is not None
        assert hook.webhook["delivery_policy"] == parse_policy({"numRetries": 5}).as_dict()
    finally:
        await svc.close()


async def test_sqlite_store_from_before_webhooks_is_migrated(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "queues.db")
    conn.execute(
        "CREATE TABLE subscriptions (id TEXT PRIMARY KEY, topic TEXT NOT NULL, "
        "queue TEXT NOT NULL, filter_policy TEXT, created_at INTEGER NOT NULL)"
    )
    conn.execute("INSERT INTO subscriptions VALUES ('sub_old', 'a.>', 'q', NULL, 1)")
    conn.commit()
    conn.close()
    svc = open_queue_service(engine="memory", data_dir=tmp_path, redis_url="")
    await svc.start()
    try:
        assert [s["id"] for s in await svc.list_subscriptions()] == ["sub_old"]
        await svc.create_webhook_subscription("a.>", "https://h/x", None)
        assert len(await svc.webhook_subscriptions()) == 1
        assert await svc.history_rules() == []
        await svc.set_history_rules([{"pattern": "a.>", "ttl": 5}])
        assert await svc.history_rules() == [{"pattern": "a.>", "size": None, "ttl": 5.0}]
    finally:
        await svc.close()

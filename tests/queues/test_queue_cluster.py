"""The Redis queue store on a Redis Cluster (3 masters, real redis-server processes).

The whole contract suite already runs on the cluster (the `redis-cluster` store in
conftest.py). These tests add what only a cluster has: queues whose keys live on
different nodes (dead-letter moves, redrive, fan-out, batched stats), scripts
missing on a node, the wake-up listener on one node hearing sends made on any
other, its move to another node, and a real `herald serve` on the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from queue_helpers import FakeClock, make_service
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis_harness import RedisClusterServers

from fanout.message import Message
from fanout.queues import QueueService
from fanout.queues import service as service_module
from fanout.queues.redis_store import RedisQueueService
from procs import MS, HeraldServer, RedisServer, after, until
from wsclient import collect, connect, subscribe


def cluster_service(
    cluster: RedisClusterServers,
    tmp_path: Path,
    clock: FakeClock,
    namespace: str | None = None,
    url: str | None = None,
) -> RedisQueueService:
    svc = make_service("redis", url or cluster.url, tmp_path, clock, namespace=namespace)
    assert isinstance(svc, RedisQueueService)
    return svc


@pytest.fixture
async def csvc(
    shared_redis_cluster: RedisClusterServers, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[RedisQueueService]:
    svc = cluster_service(shared_redis_cluster, tmp_path, clock)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.close()


def node_of(svc: RedisQueueService, name: str) -> str:
    cluster = svc._redis
    assert isinstance(cluster, RedisCluster)
    node = cluster.get_node_from_key(svc.keys.queue(name)[0])
    assert node is not None
    return str(node.name)


def spread(svc: RedisQueueService, prefix: str, n: int, suffix: str = "") -> list[str]:
    """`n` queue names whose keys live on `n` different cluster nodes."""
    names: dict[str, str] = {}
    for i in range(1000):
        name = f"{prefix}{i}{suffix}"
        names.setdefault(node_of(svc, name), name)
        if len(names) == n:
            return list(names.values())
    raise AssertionError("could not spread queues over the nodes")


def order(n: int, topic: str) -> Message:
    return Message.build(topic, f"m{n}", 1_700_000_000_000 + n, {"order": n}, {})


async def drain(svc: QueueService, name: str) -> list[Any]:
    msgs = await svc.receive(name, max=100)
    if msgs:
        await svc.ack(name, [m["receipt"] for m in msgs])
    return [m["body"] for m in msgs]


# ---- detection and key layout -------------------------------------------------------------


async def test_cluster_detected_or_forced_and_every_script_single_slot(
    shared_redis_cluster: RedisClusterServers,
    shared_redis: RedisServer,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    port = shared_redis_cluster.nodes[1].port
    for url in (shared_redis_cluster.url, f"redis+cluster://127.0.0.1:{port}"):
        svc = cluster_service(shared_redis_cluster, tmp_path, clock, url=url)
        await svc.start()
        try:
            assert svc.cluster and await svc.ping()
            ns = svc.keys.ns
            glob = [svc.keys.registry, svc.keys.subscriptions, svc.keys.subscriptions_version]
            assert all(f"{{{ns}:global}}" in k for k in glob)
            assert len({key_slot(k.encode()) for k in glob}) == 1
            assert len({key_slot(k.encode()) for k in svc.keys.queue("jobs")}) == 1
            await svc.create_or_update("jobs", {})
            await svc.send("jobs", {"body": url})
            assert await drain(svc, "jobs") == [url]
        finally:
            await svc.close()
    # A single Redis keeps the key names it always had (existing data stays valid).
    single = make_service("redis", shared_redis.url, tmp_path, clock, namespace="legacy")
    assert isinstance(single, RedisQueueService)
    await single.start()
    try:
        assert not single.cluster
        assert (
            single.keys.registry,
            single.keys.subscriptions,
            single.keys.subscriptions_version,
        ) == ("legacy:queues", "legacy:subs", "legacy:subs:version")
    finally:
        await single.close()


# ---- across slots -------------------------------------------------------------------------


async def test_dead_letter_and_redrive_between_nodes(
    csvc: RedisQueueService, clock: FakeClock
) -> None:
    work, dlq = spread(csvc, "work", 2)
    assert node_of(csvc, work) != node_of(csvc, dlq)
    await csvc.create_or_update(dlq, {})
    await csvc.create_or_update(
        work, {"visibility_timeout": 10, "dead_letter": {"queue": dlq, "max_receive_count": 1}}
    )
    sent = [(await csvc.send(work, {"body": n}))["id"] for n in range(3)]
    assert len(await csvc.receive(work, max=10)) == 3
    clock.advance(11)  # visibility runs out: the next receive would be the second
    assert await csvc.receive(work, max=10) == []
    stats = {q["name"]: q for q in await csvc.list_queues()}  # one batched script per node
    assert stats[work]["dead_lettered_total"] == 3 and stats[dlq]["visible"] == 3
    assert sorted(m["id"] for m in await csvc.receive(dlq, max=10, visibility_timeout=0)) == sorted(
        sent
    )
    assert await csvc.redrive(dlq) == 3
    assert sorted(await drain(csvc, work)) == [0, 1, 2]
    assert (await csvc.get(dlq))["visible"] == 0


async def test_fanout_to_queues_on_every_node_and_lost_scripts(
    shared_redis_cluster: RedisClusterServers, csvc: RedisQueueService
) -> None:
    plain = spread(csvc, "fan", 3)
    fifo = spread(csvc, "ord", 3, ".fifo")
    for q in plain + fifo:
        await csvc.create_or_update(q, {})
        await csvc.create_subscription("shop.>", q, None)
    msgs = [order(i, f"shop.{i % 2}") for i in range(6)]
    await csvc.on_publish(msgs)
    for q in plain:
        assert sorted(b["id"] for b in await drain(csvc, q)) == [f"m{i}" for i in range(6)]
    # A node that lost its scripts (a new primary) answers NOSCRIPT inside the batch:
    # that script did not run, and runs again once the scripts are loaded.
    shared_redis_cluster.cli_all("SCRIPT", "FLUSH")
    await csvc.on_publish([order(0, "shop.0")])  # FIFO: the same id is deduplicated
    await csvc.on_publish([order(6, "shop.0")])
    assert len(await csvc.list_queues()) == 6
    for q in fifo:
        seen: list[str] = []
        while batch := await drain(csvc, q):  # one message in flight per topic
            seen += [b["id"] for b in batch]
        evens = [s for s in seen if int(s[1:]) % 2 == 0]
        assert sorted(seen) == [f"m{i}" for i in range(7)] and evens == ["m0", "m2", "m4", "m6"]
    assert [b["id"] for b in await drain(csvc, plain[0])] == ["m0", "m6"]


# ---- long polling and subscription changes between processes ------------------------------


async def listening(svc: RedisQueueService, cluster: RedisClusterServers) -> None:
    """Until `svc`'s wake-up listener hears a PUBLISH made on any node."""
    deadline = time.monotonic() + 5000 * MS
    for i in range(1000):
        assert time.monotonic() < deadline, "the wake-up listener is not back"
        event = svc._events.setdefault("probe", asyncio.Event())
        cluster.nodes[i % len(cluster.nodes)].cli("PUBLISH", svc.keys.wake_channel("probe"), "1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), 100 * MS)
            return


async def test_wakeups_and_subscription_changes_cross_nodes_and_listener_reconnects(
    shared_redis_cluster: RedisClusterServers,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No polling tick within the test: only a pub/sub wake-up can end a wait early.
    monkeypatch.setattr(service_module, "POLL_TICK_S", 30.0)
    ns = f"c{uuid.uuid4().hex[:8]}"
    a = cluster_service(shared_redis_cluster, tmp_path, clock, namespace=ns)
    b = cluster_service(shared_redis_cluster, tmp_path, clock, namespace=ns)
    await a.start()
    await b.start()
    try:
        queues = spread(a, "wake", 3)
        for q in queues:
            await a.create_or_update(q, {})
        await listening(b, shared_redis_cluster)

        async def wake_each() -> None:
            for q in queues:
                sender = after(100 * MS, functools.partial(a.send, q, {"body": q}))
                started = time.monotonic()
                msgs = await b.receive(q, wait=5)
                await sender
                assert [m["body"] for m in msgs] == [q]
                assert time.monotonic() - started < 2000 * MS

        await wake_each()
        # Every listener loses its node connection and comes back (same or another node).
        shared_redis_cluster.cli_all("CLIENT", "KILL", "TYPE", "pubsub")
        await listening(b, shared_redis_cluster)
        await wake_each()

        await a.create_subscription("news.>", queues[0], None)
        await until(lambda: bool(b._subs), "b hears of the new subscription")
        await b.on_publish([order(1, "news.x")])
        assert [x["id"] for x in await drain(a, queues[0])] == ["m1"]
    finally:
        await a.close()
        await b.close()


# ---- a real gateway on the cluster ----------------------------------------------------------


@pytest.mark.integration
async def test_herald_serve_on_cluster(shared_redis_cluster: RedisClusterServers) -> None:
    server = HeraldServer(
        env={"HERALD_ENGINE": "redis", "HERALD_REDIS_URL": shared_redis_cluster.url}
    ).start()
    try:
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
            deadline = time.monotonic() + 10_000 * MS
            while (r := await http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, (r.text, server.output())
                await asyncio.sleep(100 * MS)
            assert r.json()["queues"] is True
            q = f"e2e{uuid.uuid4().hex[:6]}"
            assert (await http.put(f"/v1/queues/{q}")).status_code == 200
            assert (
                await http.post(f"/v1/queues/{q}/messages", json={"body": {"n": 1}})
            ).status_code == 201
            [msg] = (await http.post(f"/v1/queues/{q}/receive", json={"max": 5})).json()["messages"]
            assert msg["body"] == {"n": 1}
            r = await http.post(f"/v1/queues/{q}/ack", json={"receipts": [msg["receipt"]]})
            assert r.json()["results"][0]["ok"] is True
            r = await http.post("/v1/subscriptions", json={"topic": "news.>", "queue": q})
            assert r.status_code == 201

            ws = await connect(server.ws)
            try:
                await subscribe(ws, "news.x")
                r = await http.post("/v1/publish", json={"topic": "news.x", "data": {"n": 2}})
                assert r.status_code < 300, r.text
                [live] = await collect(ws, 1)
                assert live["data"] == {"n": 2}
            finally:
                await ws.close()
            [queued] = (await http.post(f"/v1/queues/{q}/receive", json={"wait": 5})).json()[
                "messages"
            ]
            assert queued["body"]["data"] == {"n": 2}
    finally:
        server.stop()

"""History and resume (docs/protocol.md) on both engines, with publishes running meanwhile.

On `redis` the subscriber's pod is not the publishers' pod, so the replay comes
from Redis and the live tail from pub/sub; the node's resume logic is the same.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from redis_harness import Inbox, publish, started, ws_connect, ws_subscribe

from procs import MS, HeraldServer, RedisServer, until

pytestmark = pytest.mark.integration

HISTORY = json.dumps(
    [{"pattern": "small.>", "size": 5}, {"pattern": "live.>", "size": 1000, "ttl": 300}]
)
TOTAL = 150


@dataclass
class Pods:
    publisher: HeraldServer
    subscriber: HeraldServer


@pytest.fixture(scope="module", params=["memory", "redis"])
def pods(request: pytest.FixtureRequest) -> Iterator[Pods]:
    if request.param == "memory":
        pod = HeraldServer(env={"HERALD_ENGINE": "memory", "HERALD_HISTORY": HISTORY})
        with started(pod):
            yield Pods(pod, pod)
        return
    redis = RedisServer().start()
    try:
        env = {"HERALD_ENGINE": "redis", "HERALD_REDIS_URL": redis.url, "HERALD_HISTORY": HISTORY}
        a, b = HeraldServer(env=dict(env)), HeraldServer(env=dict(env))
        with started(a, b):
            yield Pods(a, b)
    finally:
        redis.stop()


async def _publisher(client: httpx.AsyncClient, pod: HeraldServer, topic: str) -> None:
    for n in range(1, TOTAL + 1):
        r = await publish(client, pod, topic, {"n": n})
        assert r.status_code == 202, r.text
        assert r.json()["offset"] == n
        await asyncio.sleep(4 * MS)


async def test_resume_replays_every_missed_message_once(pods: Pods) -> None:
    topic = f"live.{uuid.uuid4().hex[:8]}"
    ws = await ws_connect(pods.subscriber)
    first = await ws_subscribe(ws, topic)
    # A history topic without `since`: the reply says where the client stands.
    assert first["offset"] == 0 and isinstance(first["epoch"], str) and first["epoch"]
    inbox = Inbox(ws)
    async with httpx.AsyncClient(timeout=10) as client:
        task = asyncio.create_task(_publisher(client, pods.publisher, topic))
        await inbox.wait_for(30)
        await inbox.close()  # disconnect mid-stream
        seen = [m["offset"] for m in inbox.msgs]
        await asyncio.sleep(200 * MS)  # publishes keep coming meanwhile

        ws = await ws_connect(pods.subscriber)
        await ws.send(
            json.dumps(
                {
                    "op": "subscribe",
                    "id": 7,
                    "topic": topic,
                    "since": seen[-1],
                    "epoch": first["epoch"],
                }
            )
        )
        inbox = Inbox(ws)
        await until(lambda: any(f.get("op") == "subscribed" for f in inbox.frames), "the reply")
        reply = next(f for f in inbox.frames if f.get("op") == "subscribed")
        assert reply["recovered"] is True, reply
        assert reply["epoch"] == first["epoch"]
        assert not task.done(), "the publisher finished before the resume: test too slow"
        await task
        await inbox.wait_for(TOTAL - len(seen))
        await asyncio.sleep(200 * MS)  # a duplicate would have arrived by now
        await inbox.close()
    resumed = [m["offset"] for m in inbox.msgs]
    assert seen == list(range(1, len(seen) + 1))
    # Every missed message exactly once, in order, then the live tail.
    assert seen + resumed == list(range(1, TOTAL + 1))
    assert [m["data"]["n"] for m in inbox.msgs] == resumed


async def test_resume_beyond_history_is_not_recovered(pods: Pods) -> None:
    topic = f"small.{uuid.uuid4().hex[:8]}"
    ws = await ws_connect(pods.subscriber)
    first = await ws_subscribe(ws, topic)
    await ws.close()
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(1, 21):
            assert (await publish(client, pods.publisher, topic, {"n": n})).status_code == 202
    ws = await ws_connect(pods.subscriber)
    # Offset 2 is older than the 5 kept messages: no partial replay.
    old = await ws_subscribe(ws, topic, since=2, epoch=first["epoch"])
    assert old["recovered"] is False and old["offset"] == 20
    # Inside the kept window it recovers; with another epoch it does not.
    ok = await ws_subscribe(ws, f"{topic}", since=16, epoch=first["epoch"], batch_ms=1)
    assert ok["recovered"] is True
    frame = json.loads(await asyncio.wait_for(ws.recv(), 5000 * MS))
    assert [m["offset"] for m in frame["msgs"]] == [17, 18, 19, 20]
    other = await ws_subscribe(ws, topic, since=16, epoch="not-it", batch_ms=2)
    assert other["recovered"] is False
    await ws.close()

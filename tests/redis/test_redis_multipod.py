"""Three `herald serve --engine redis` pods on one Redis, then on a Redis Cluster.

Real processes only: a private redis-server (or three cluster masters), three
gateway processes, `websockets` clients spread over them, HTTP publishers.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis_harness import (
    Inbox,
    RedisClusterServers,
    herald_pods,
    publish,
    started,
    stats,
    ws_connect,
    ws_subscribe,
)

from procs import MS, HeraldServer, RedisServer, until

pytestmark = pytest.mark.integration

HISTORY = json.dumps([{"pattern": "hist.>", "size": 100}])


@dataclass
class Deployment:
    kind: str
    pods: list[HeraldServer]
    ports: list[int]  # Redis ports (one, or the three masters)

    def cli(self, *args: str) -> list[str]:
        """Run a redis-cli command on every Redis node (`-c` follows MOVED)."""
        out = []
        for port in self.ports:
            proc = subprocess.run(
                ["redis-cli", "-c", "-p", str(port), *args],
                capture_output=True,
                text=True,
                check=True,
            )
            out.append(proc.stdout)
        return out

    def channels(self) -> set[str]:
        """Channels with at least one subscriber (shard channels on a cluster)."""
        cmd = ("PUBSUB", "SHARDCHANNELS") if self.kind == "cluster" else ("PUBSUB", "CHANNELS")
        return {line for text in self.cli(*cmd) for line in text.splitlines() if line}

    def numsub(self, channel: str) -> int:
        cmd = "SHARDNUMSUB" if self.kind == "cluster" else "NUMSUB"
        total = 0
        for text in self.cli("PUBSUB", cmd, channel):
            lines = text.splitlines()
            total += int(lines[1]) if len(lines) > 1 else 0
        return total

    def prefix_members(self) -> list[str]:
        text = self.cli("ZRANGE", "herald:prefixes", "0", "-1")[0]
        return [line for line in text.splitlines() if line]


@pytest.fixture(scope="module", params=["single", "cluster"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    env = {"HERALD_ENGINE": "redis", "HERALD_HISTORY": HISTORY}
    redis: RedisServer | None = None
    cluster: RedisClusterServers | None = None
    try:
        if request.param == "cluster":
            # HERALD_REDIS_URL points at the cluster: backplane and queues both detect it.
            cluster = RedisClusterServers().start()
            env["HERALD_REDIS_URL"] = cluster.url
            ports = [n.port for n in cluster.nodes]
        else:
            redis = RedisServer().start()
            env["HERALD_REDIS_URL"] = redis.url
            ports = [redis.port]
        pods = herald_pods(3, env)
        with started(*pods):
            yield Deployment(request.param, pods, ports)
    finally:
        if cluster is not None:
            cluster.stop()
        if redis is not None:
            redis.stop()


def topic_ch(topic: str) -> str:
    return f"herald:t:{{{topic}}}"


def prefix_ch(prefix: str) -> str:
    return f"herald:p:{prefix}"


async def wait_prefixes(dep: Deployment, *prefixes: str) -> None:
    """Until every pod can know these wildcard prefixes (announced in Redis)."""
    await until(
        lambda: all(any(m.partition(":")[2] == p for m in dep.prefix_members()) for p in prefixes),
        f"prefixes {prefixes} announced",
    )
    await asyncio.sleep(300 * MS)  # the control notice travels right behind the ZADD


# (pod, pattern, filter, which messages it must get)
Spec = tuple[int, str, dict[str, Any] | None, Callable[[str, dict[str, Any]], bool]]


async def test_publishes_reach_every_matching_subscriber_once(deployment: Deployment) -> None:
    dep = deployment
    run = uuid.uuid4().hex[:6]
    room = f"room{run}"
    specs: list[Spec] = [
        (0, f"{room}.1", None, lambda t, a: t == f"{room}.1"),
        (1, f"{room}.1", None, lambda t, a: t == f"{room}.1"),
        (
            2,
            f"{room}.1",
            {"kind": [{"anything-but": ["goal"]}]},
            lambda t, a: t == f"{room}.1" and a["kind"] != "goal",
        ),
        (2, f"{room}.*", None, lambda t, a: t.count(".") == 1 and t.startswith(room)),
        (
            0,
            f"{room}.>",
            {"kind": ["goal"]},
            lambda t, a: t.startswith(room) and a["kind"] == "goal",
        ),
        (1, "*.2", None, lambda t, a: t.count(".") == 1 and t.endswith(".2")),
        (1, f"{room}.*.x", None, lambda t, a: t.startswith(room) and t.endswith(".x")),
    ]
    inboxes = []
    for pod, pattern, flt, _ in specs:
        ws = await ws_connect(dep.pods[pod])
        await ws_subscribe(ws, pattern, **({"filter": flt} if flt else {}))
        inboxes.append(Inbox(ws))
    # A pod with the same pattern twice (two sockets) shares one Redis subscription.
    extra = await ws_connect(dep.pods[0])
    await ws_subscribe(extra, f"{room}.1")
    inboxes.append(Inbox(extra))
    specs.append(specs[0])

    await until(lambda: dep.numsub(topic_ch(f"{room}.1")) == 3, "3 pods on the exact channel")
    await until(lambda: dep.numsub(prefix_ch(room)) == 3, "3 pods on the room prefix channel")
    await until(lambda: dep.numsub(prefix_ch("")) == 1, "1 pod on the root prefix channel")
    await wait_prefixes(dep, room, "")

    topics = [f"{room}.1", f"{room}.2", f"{room}.3.x", f"lobby{run}.2", f"{room}.1"]
    sent: list[tuple[str, dict[str, Any]]] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(40):
            topic = topics[n % len(topics)]
            attrs = {"kind": "goal" if n % 3 == 0 else "card"}
            r = await publish(client, dep.pods[n % 3], topic, {"n": n}, attributes=attrs)
            assert r.status_code == 202, r.text
            sent.append((topic, attrs))
    expected = [[n for n, (t, a) in enumerate(sent) if want(t, a)] for _pod, _p, _f, want in specs]
    for inbox, exp in zip(inboxes, expected, strict=True):
        await inbox.wait_for(len(exp), timeout=5000 * MS)
    await asyncio.sleep(300 * MS)  # anything extra (a duplicate) would arrive by now
    for (pod, pattern, flt, _), inbox, exp in zip(specs, inboxes, expected, strict=True):
        assert exp, pattern
        assert inbox.data() == exp, f"pod {pod} {pattern} {flt}"
    for inbox in inboxes:
        await inbox.close()

    # The last local subscriber left: every Redis subscription for it is gone,
    # and so is the pods' wildcard interest.
    gone = {topic_ch(f"{room}.1"), prefix_ch(room), prefix_ch("")}
    await until(lambda: not (gone & dep.channels()), "subscriptions removed")
    await until(
        lambda: not any(m.partition(":")[2] in (room, "") for m in dep.prefix_members()),
        "prefix interest removed",
    )


async def test_pod_without_interest_gets_no_traffic(deployment: Deployment) -> None:
    dep = deployment
    quiet = f"quiet{uuid.uuid4().hex[:6]}"
    ws_a = await ws_connect(dep.pods[0])
    await ws_subscribe(ws_a, f"{quiet}.a")
    ws_b = await ws_connect(dep.pods[1])
    await ws_subscribe(ws_b, f"{quiet}.*")
    a, b = Inbox(ws_a), Inbox(ws_b)
    await until(lambda: dep.numsub(topic_ch(f"{quiet}.a")) == 1, "exact channel")
    await until(lambda: dep.numsub(prefix_ch(quiet)) == 1, "prefix channel")
    await wait_prefixes(dep, quiet)
    async with httpx.AsyncClient(timeout=10) as client:
        before = [(await stats(client, p))["backplane"]["messages_in"] for p in dep.pods]
        for n in range(10):
            r = await publish(client, dep.pods[n % 3], f"{quiet}.a", {"n": n})
            assert r.status_code == 202
        await a.wait_for(10)
        await b.wait_for(10)
        await asyncio.sleep(200 * MS)  # pod 2 would have counted a stray copy by now
        after = [(await stats(client, p))["backplane"]["messages_in"] for p in dep.pods]
    assert a.data() == list(range(10))
    assert b.data() == list(range(10))
    delta = [y - x for x, y in zip(before, after, strict=True)]
    assert delta == [10, 10, 0], delta  # pod 2 has no subscriber: no traffic at all
    assert topic_ch(f"{quiet}.a") in dep.channels()
    await a.close()
    await b.close()


async def test_concurrent_first_subscribers_all_get_messages(deployment: Deployment) -> None:
    """The broadcaster library loses all but one of several concurrent first subscribers."""
    dep = deployment
    topic = f"race{uuid.uuid4().hex[:6]}.t"
    conns = await asyncio.gather(*(ws_connect(dep.pods[i % 3]) for i in range(24)))
    await asyncio.gather(*(ws_subscribe(ws, topic) for ws in conns))
    # Flap one pod's interest: subscribe/unsubscribe a second topic quickly.
    flap = await ws_connect(dep.pods[2])
    for _ in range(20):
        reply = await ws_subscribe(flap, f"{topic}.flap")
        await flap.send(json.dumps({"op": "unsubscribe", "id": 2, "sub": reply["sub"]}))
    await ws_subscribe(flap, f"{topic}.flap")
    inboxes = [Inbox(ws) for ws in conns]
    flap_inbox = Inbox(flap)
    await until(lambda: dep.numsub(topic_ch(topic)) == 3, "all pods subscribed")
    await until(lambda: dep.numsub(topic_ch(f"{topic}.flap")) == 1, "flapping ends subscribed")
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(5):
            assert (await publish(client, dep.pods[n % 3], topic, {"n": n})).status_code == 202
        r = await publish(client, dep.pods[0], f"{topic}.flap", {"n": 99})
        assert r.status_code == 202
    for inbox in inboxes:
        await inbox.wait_for(5)
    await flap_inbox.wait_for(1)
    assert [i.data() for i in inboxes] == [list(range(5))] * len(inboxes)
    assert flap_inbox.data() == [99]
    for inbox in [*inboxes, flap_inbox]:
        await inbox.close()
    await until(lambda: topic_ch(topic) not in dep.channels(), "subscription removed")


async def test_history_topic_offsets_across_pods(deployment: Deployment) -> None:
    """Offsets are per topic and shared: any pod assigns the next one."""
    dep = deployment
    topic = f"hist.{uuid.uuid4().hex[:6]}"
    ws = await ws_connect(dep.pods[1])
    reply = await ws_subscribe(ws, topic)
    assert reply["offset"] == 0 and reply["epoch"]
    inbox = Inbox(ws)
    async with httpx.AsyncClient(timeout=10) as client:
        offsets = []
        for n in range(6):
            r = await publish(client, dep.pods[n % 3], topic, {"n": n})
            offsets.append(r.json()["offset"])
        # An idempotent repeat on another pod answers with the first result.
        first = await publish(client, dep.pods[0], topic, {"n": 6}, id="once")
        again = await publish(client, dep.pods[2], topic, {"n": 6}, id="once")
        assert first.json() == again.json() == {"id": "once", "offset": 7}
        hist = (await client.get(f"{dep.pods[2].http}/v1/topics/{topic}/history?since=2")).json()
    assert offsets == [1, 2, 3, 4, 5, 6]
    assert hist["epoch"] == reply["epoch"]
    assert [m["offset"] for m in hist["messages"]] == [3, 4, 5, 6, 7]
    await inbox.wait_for(7)
    await asyncio.sleep(200 * MS)  # a duplicate would have arrived by now
    assert [m["offset"] for m in inbox.msgs] == [1, 2, 3, 4, 5, 6, 7]
    await inbox.close()

"""Issue 4 durability with real kills: SIGKILL `herald serve` while messages are
unacked, restart it on the same store, and every message comes back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from procs import MS, HeraldServer, RedisServer
from wsclient import connect, recv_op

pytestmark = pytest.mark.integration

VT = 2  # visibility timeout, seconds


@pytest.fixture(params=["memory", "redis"])
def engine_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "memory":
        yield {"HERALD_ENGINE": "memory"}
        return
    redis = RedisServer(args=("--appendonly", "yes", "--appendfsync", "always")).start()
    try:
        yield {"HERALD_ENGINE": "redis", "HERALD_REDIS_URL": redis.url}
    finally:
        redis.stop()


def receive_all(http: str, deadline_s: float) -> list[dict]:
    got: list[dict] = []
    end = time.monotonic() + deadline_s
    with httpx.Client(timeout=30) as c:
        while time.monotonic() < end:
            r = c.post(f"{http}/v1/queues/work/receive", json={"max": 100, "wait": 1})
            assert r.status_code == 200, r.text
            msgs = r.json()["messages"]
            got += msgs
            for m in msgs:
                assert (
                    c.post(
                        f"{http}/v1/queues/work/ack", json={"receipts": [m["receipt"]]}
                    ).status_code
                    == 200
                )
            if not msgs and got and len({m["id"] for m in got}) >= 40:
                break
    return got


async def test_sigkill_with_unacked_messages_redelivers_after_restart(
    engine_env: dict[str, str],
) -> None:
    first = HeraldServer(env=engine_env).start()
    try:
        with httpx.Client() as c:
            assert c.put(f"{first.http}/v1/queues/work", json={"visibility_timeout": VT}).is_success
            r = c.post(
                f"{first.http}/v1/queues/work/messages/batch",
                json={"entries": [{"body": {"n": i}} for i in range(40)]},
            )
            sent = {x["id"] for x in r.json()["results"]}
            assert len(sent) == 40
            # An HTTP consumer holds 10 unacked...
            held = c.post(f"{first.http}/v1/queues/work/receive", json={"max": 10}).json()
            assert len(held["messages"]) == 10
        # ...and a WebSocket consumer holds 5 more when the process dies.
        ws = await connect(first.ws)
        await ws.send(json.dumps({"op": "consume", "id": 1, "queue": "work", "prefetch": 5}))
        ws_jobs = [await recv_op(ws, "job") for _ in range(5)]
        first.kill()
        await asyncio.sleep(100 * MS)
    finally:
        first.kill()
    second = HeraldServer(env=engine_env, data_dir=first.data_dir, port=first.port).start()
    try:
        got = await asyncio.to_thread(receive_all, second.http, 20 + 3 * VT)
    finally:
        second.stop()
    ids = {m["id"] for m in got}
    assert ids == sent  # nothing lost across the kill
    held_ids = {m["id"] for m in held["messages"]} | {j["msg_id"] for j in ws_jobs}
    redelivered = [m for m in got if m["id"] in held_ids]
    assert len(held_ids) == 15
    assert all(m["receive_count"] >= 2 for m in redelivered)

"""WebSocket command fuzzer: mutated commands against a real `herald serve`, both engines.

Valid commands are mutated (wrong types, missing and unknown fields, huge and deep
values, lone surrogate escapes, NaN, truncated JSON, unknown ops, random bytes,
repeated commands) and sent pipelined. Whatever the input, the server must answer
with a clear error or close the connection: never an `internal` error reply, never a
traceback in its log. The run is seeded, so a failure reproduces.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from procs import HeraldServer, RedisServer
from wsclient import connect

pytestmark = pytest.mark.integration

COMMANDS_PER_ENGINE = 10_000
PER_CONNECTION = 250
SEED = 9

BASE: list[dict[str, Any]] = [
    {"op": "subscribe", "topic": "f.a"},
    {"op": "subscribe", "topic": "f.*", "filter": {"k": ["v", {"prefix": "x"}]}, "batch_ms": 10},
    {"op": "subscribe", "topic": "f.>", "filter": {"n": [{"numeric": [">", 1, "<=", 9]}]}},
    {"op": "subscribe", "topic": "h.a", "since": 0},
    {"op": "subscribe", "topic": "h.b", "since": 3, "epoch": "e"},
    {"op": "subscribe", "topic": "h.a"},
    {"op": "subscribe", "topic": "f.>", "mode": "latest", "key": "k"},
    {"op": "subscribe", "topic": ">"},
    {"op": "unsubscribe", "sub": "0123456789abcdef"},
    {"op": "publish", "topic": "f.a", "data": {"n": 1}, "attributes": {"k": "v", "n": 3}},
    {"op": "publish", "topic": "h.a", "data": [1, "two"], "msg_id": "m-1"},
    {"op": "publish", "topic": "q.x", "data": "to the queue"},
    {"op": "ping"},
    {"op": "auth", "token": "not-a-token"},
    {"op": "consume", "queue": "fz", "prefetch": 2},
    {"op": "consume", "queue": "fz.fifo", "visibility_timeout": 5},
    {"op": "ack", "receipt": "a.b"},
    {"op": "ack", "queue": "fz", "receipts": ["a.b", "c.d"]},
    {"op": "nack", "receipt": "a.b", "delay": 1},
    {"op": "extend", "receipt": "a.b", "visibility_timeout": 10},
]


def deep(n: int, leaf: Any = 1) -> Any:
    for _ in range(n):
        leaf = [leaf]
    return leaf


ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, -0.0, 2**53, 2**63, 2**64 + 1, -(2**70),
    "", "x" * 5000, "f.a", ">", "*", "a..b", "f.a.", " ", "é", "\x00", "h.a",
    [], [1, "a"], ["a.b"] * 200, list(range(2000)), {}, {"a": {"b": []}},
    {"$or": [{"k": ["v"]}, {"n": [{"exists": True}]}]}, {"k": [{"anything-but": ["x"]}]},
    {"k": [{"numeric": ["<", "x"]}]}, {"k": [{"cidr": "10.0.0.0/8"}]}, {"k": [{"nope": 1}]},
    deep(40), deep(70), deep(300), deep(100, {"k": "v"}),
]  # fmt: skip
RAW_VALUES = [
    '"\\ud800"', '"a\\udfffb"', '"\\ud83d"', "NaN", "Infinity", "-Infinity", "1e999",
    "18446744073709551616", "1" * 5000, "1e-400", '{"\\ud800": 1}', "[" * 600 + "]" * 600,
]  # fmt: skip
RAW_MARK = "__raw_value__"
DEEP_OR_WIDE: list[Any] = [
    deep(251), deep(252), deep(253), deep(65, {"a": 1}), {str(i): i for i in range(200)},
    [[]] * 5000,
]  # fmt: skip


def mutate(rng: random.Random) -> list[str | bytes]:
    """One mutation: the frames (text as str, binary as bytes) to send."""
    cmd = dict(rng.choice(BASE))
    if rng.random() < 0.5:
        cmd["id"] = rng.choice([1, "c", 2**40, 1.5, True, [], {}, None, "x" * 300])
    kind = rng.randrange(12)
    fields = [k for k in cmd if k != "op"] or ["op"]
    if kind == 0:  # a field of the wrong type or value
        cmd[rng.choice([*fields, "op"])] = rng.choice(ODD_VALUES)
    elif kind == 1:  # a missing field
        cmd.pop(rng.choice(fields), None)
    elif kind == 2:  # an unknown field
        cmd[rng.choice(["extra", "__proto__", "", "op2"])] = rng.choice(ODD_VALUES)
    elif kind == 3:  # an unknown or odd op
        cmd["op"] = rng.choice(["nope", "", "SUBSCRIBE", "subscribe ", 1, None, ["ping"]])
    elif kind == 4:  # JSON the standard would not produce, spliced in as text
        cmd[rng.choice([*fields, "data", "filter"])] = RAW_MARK
        raw = rng.choice(RAW_VALUES)
        return [json.dumps(cmd).replace(f'"{RAW_MARK}"', raw, 1)]
    elif kind == 5:  # not an object
        return [rng.choice(["[]", "1", '"ping"', "null", "true", "[{}]", " ", ""])]
    elif kind == 6:  # truncated
        text = json.dumps(cmd)
        return [text[: rng.randrange(len(text))]]
    elif kind == 7:  # random bytes, as binary and as text
        blob = rng.randbytes(rng.randrange(1, 200))
        return [blob if rng.random() < 0.5 else blob.decode("latin-1")]
    elif kind == 8:  # the same command again, back to back
        return [json.dumps(cmd)] * rng.randrange(2, 6)
    elif kind == 9:  # deep or wide values where a command carries data
        value = rng.choice(DEEP_OR_WIDE)
        if rng.random() < 0.5:  # published to a queue-fed topic: must stay receivable
            cmd = {"op": "publish", "topic": rng.choice(["q.x", "f.a", "h.a"]), "data": value}
        else:
            cmd[rng.choice(["data", "filter", "attributes", "receipts"])] = value
    # kinds 10 and 11: the command as it is
    return [json.dumps(cmd)]


async def reader(ws: Any, replies: list[dict[str, Any]], done: asyncio.Event) -> None:
    """Collect replies until the connection closes (draining it, so close() completes)."""
    try:
        async for raw in ws:
            frame = json.loads(raw)
            replies.append(frame)
            if frame.get("op") == "pong" and frame.get("id") == "fuzz-end":
                done.set()
    except ConnectionClosed:
        pass
    finally:
        done.set()


async def fuzz(server: HeraldServer) -> tuple[int, list[dict[str, Any]]]:
    """Send COMMANDS_PER_ENGINE mutated frames; returns (sent, every reply)."""
    async with httpx.AsyncClient(base_url=server.http) as c:
        for q in ("fz", "fz.fifo"):
            assert (await c.put(f"/v1/queues/{q}")).is_success
        r = await c.post("/v1/subscriptions", json={"topic": "q.>", "queue": "fz"})
        assert r.status_code == 201
    rng = random.Random(SEED)
    sent = 0
    replies: list[dict[str, Any]] = []
    while sent < COMMANDS_PER_ENGINE:
        ws = await connect(server.ws, max_size=None)
        done = asyncio.Event()
        task = asyncio.create_task(reader(ws, replies, done))
        try:
            for i in range(PER_CONNECTION):
                if i % 4 == 3:  # a valid command resets the bad-frames count
                    await ws.send('{"op":"ping"}')
                for frame in mutate(rng):
                    await ws.send(frame)
                    sent += 1
            await ws.send('{"op":"ping","id":"fuzz-end"}')
        except ConnectionClosed:
            pass  # the server may close on hostile input (1002, 1007, 1008, 1009)
        await asyncio.wait_for(done.wait(), 60)  # every reply is in
        await ws.close()
        await asyncio.wait_for(task, 10)
    return sent, replies


# Errors that mean "your input": anything else (internal, backplane_unavailable while
# Redis is up, ...) is a server fault the fuzzer found.
CLIENT_ERRORS = {
    "invalid_request", "invalid_topic", "invalid_filter", "filter_cost_exceeded",
    "payload_too_large", "unauthorized", "forbidden", "queue_not_found", "receipt_invalid",
    "rate_limited",
}  # fmt: skip


def check(server: HeraldServer, sent: int, replies: list[dict[str, Any]]) -> None:
    assert sent >= COMMANDS_PER_ENGINE
    errors = [r for r in replies if r.get("op") == "error"]
    faults = [r for r in errors if r.get("code") not in CLIENT_ERRORS]
    assert faults == [], faults[:5]
    assert "invalid_request" in {r["code"] for r in errors}  # the validators were reached
    # What the fuzz enqueued (topic q.> feeds queue fz) can be received again.
    with httpx.Client(base_url=server.http) as c:
        for _ in range(100):
            r = c.post("/v1/queues/fz/receive", json={"max": 100})
            assert r.status_code == 200, r.text
            if not r.json()["messages"]:
                break
            c.post(
                "/v1/queues/fz/ack", json={"receipts": [m["receipt"] for m in r.json()["messages"]]}
            )
        assert c.get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def memory_server() -> Iterator[HeraldServer]:
    s = HeraldServer(env={"HERALD_HISTORY": '[{"pattern": "h.>", "size": 50}]'}).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def redis_engine_server(shared_redis: RedisServer) -> Iterator[HeraldServer]:
    env = {
        "HERALD_ENGINE": "redis",
        "HERALD_REDIS_URL": shared_redis.url,
        "HERALD_HISTORY": '[{"pattern": "h.>", "size": 50}]',
    }
    s = HeraldServer(env=env).start()
    yield s
    s.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("engine", ["memory", "redis"])
async def test_fuzzed_commands_never_fail_internally(
    engine: str, request: pytest.FixtureRequest
) -> None:
    server: HeraldServer = request.getfixturevalue(
        f"{engine}_server" if engine == "memory" else "redis_engine_server"
    )
    sent, replies = await fuzz(server)
    check(server, sent, replies)
    log = server.output()
    assert "Traceback" not in log, log[-5000:]

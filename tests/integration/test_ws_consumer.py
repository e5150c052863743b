"""Queue consumers over the WebSocket: prefetch, ack, and release on close."""

from __future__ import annotations

import json

import httpx
import pytest

from procs import HeraldServer
from wsclient import assert_silent, connect, recv_json, recv_op

pytestmark = pytest.mark.integration


async def test_prefetch_ack_and_release_on_close(server: HeraldServer) -> None:
    http = server.http
    async with httpx.AsyncClient() as c:
        assert (await c.put(f"{http}/v1/queues/jobs", json={"visibility_timeout": 300})).is_success
        for i in range(3):
            r = await c.post(f"{http}/v1/queues/jobs/messages", json={"body": {"n": i}})
            assert r.status_code == 201
    ws = await connect(server.ws)
    await ws.send(json.dumps({"op": "consume", "id": 1, "queue": "jobs", "prefetch": 2}))
    assert (await recv_json(ws)) == {"op": "consuming", "id": 1, "queue": "jobs"}
    first = await recv_op(ws, "job")
    second = await recv_op(ws, "job")
    assert [first["body"]["n"], second["body"]["n"]] == [0, 1]
    assert first["receive_count"] == 1 and first["queue"] == "jobs"
    await assert_silent(ws, 0.5)  # prefetch 2: the third waits for an ack
    await ws.send(json.dumps({"op": "ack", "id": 2, "receipt": first["receipt"]}))
    acked = await recv_op(ws, "acked")
    assert acked["id"] == 2
    third = await recv_op(ws, "job")
    assert third["body"]["n"] == 2
    await ws.send(json.dumps({"op": "ack", "id": 3, "receipt": "bogus"}))
    err = await recv_op(ws, "error")
    assert err["code"] == "receipt_invalid"
    await ws.close()
    # Unacked jobs (n=1, n=2) are released at once when the socket closes.
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{http}/v1/queues/jobs/receive", json={"max": 10, "wait": 5})
        got = sorted(m["body"]["n"] for m in r.json()["messages"])
        if len(got) < 2:  # the release may land just after the first poll
            r = await c.post(f"{http}/v1/queues/jobs/receive", json={"max": 10, "wait": 5})
            got = sorted(got + [m["body"]["n"] for m in r.json()["messages"]])
    assert got == [1, 2]


async def test_consume_unknown_queue_is_404_code(server: HeraldServer) -> None:
    ws = await connect(server.ws)
    await ws.send(json.dumps({"op": "consume", "id": 1, "queue": "nope", "prefetch": 1}))
    reply = await recv_json(ws)
    assert reply["op"] == "error" and reply["code"] == "queue_not_found"
    await ws.close()

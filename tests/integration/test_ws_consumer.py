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


async def test_two_consumes_back_to_back_leave_no_orphan(server: HeraldServer) -> None:
    """The second `consume` of a queue is refused even before the first has replied,
    and closing the socket releases the consumer: nothing keeps taking jobs."""
    http = server.http
    async with httpx.AsyncClient() as c:
        assert (await c.put(f"{http}/v1/queues/twice", json={"visibility_timeout": 300})).is_success
    ws = await connect(server.ws)
    cmd = {"op": "consume", "queue": "twice", "prefetch": 1}
    await ws.send(json.dumps({**cmd, "id": 1}))
    await ws.send(json.dumps({**cmd, "id": 2}))
    replies = {r["id"]: r for r in [await recv_json(ws), await recv_json(ws)]}
    assert replies[1]["op"] == "consuming"
    assert replies[2]["op"] == "error" and replies[2]["code"] == "invalid_request"
    await ws.close()
    async with httpx.AsyncClient() as c:
        for i in range(3):
            r = await c.post(f"{http}/v1/queues/twice/messages", json={"body": {"n": i}})
            assert r.status_code == 201
        got: list[int] = []
        for _ in range(10):  # all three must become ours; an orphan would hold one
            r = await c.post(f"{http}/v1/queues/twice/receive", json={"max": 10, "wait": 1})
            got += [m["body"]["n"] for m in r.json()["messages"]]
            if len(got) == 3:
                break
        stats = (await c.get(f"{http}/v1/queues/twice")).json()
    assert sorted(got) == [0, 1, 2]
    assert stats["received_total"] == 3


async def test_consumer_of_a_deleted_queue_ends_with_an_error(server: HeraldServer) -> None:
    http = server.http
    async with httpx.AsyncClient() as c:
        assert (await c.put(f"{http}/v1/queues/doomed")).is_success
    ws = await connect(server.ws)
    await ws.send(json.dumps({"op": "consume", "id": 7, "queue": "doomed"}))
    assert (await recv_json(ws))["op"] == "consuming"
    async with httpx.AsyncClient() as c:
        assert (await c.delete(f"{http}/v1/queues/doomed")).status_code == 204
    err = await recv_op(ws, "error")
    assert err["code"] == "queue_not_found" and err["id"] == 7
    assert err["details"] == {"queue": "doomed"}
    # The consumer is gone: consuming the (re-created) queue again is allowed.
    async with httpx.AsyncClient() as c:
        assert (await c.put(f"{http}/v1/queues/doomed")).is_success
    await ws.send(json.dumps({"op": "consume", "id": 8, "queue": "doomed"}))
    assert (await recv_json(ws))["op"] == "consuming"
    await ws.close()

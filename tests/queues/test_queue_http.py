"""The queue HTTP routes (gateway/queues_api.py) and `herald queue` CLI (gateway/queue_cli.py).

The app here is a minimal stand-in for the real one: the queue router, a node
holding only `queues` and `auth`, and the error rendering of docs/http-api.md.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from queue_helpers import FakeClock, make_service
from typer.testing import CliRunner

from fanout.queues import QueueService
from gateway.app import install_error_handlers
from gateway.queue_cli import queue_app
from gateway.queues_api import router
from procs import MS, after, free_port
from shared.auth import Authenticator

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def build_app(svc: QueueService | None = None, data_dir: Path | None = None) -> FastAPI:
    """The router on a bare app; with `data_dir`, the app opens its own service."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if data_dir is None:
            yield
            return
        own = make_service("sqlite", "", data_dir, FakeClock(time.time()))
        await own.start()
        app.state.node.queues = own
        yield
        await own.close()

    app = FastAPI(lifespan=lifespan)
    app.state.node = SimpleNamespace(queues=svc, auth=Authenticator(api_keys=[KEY]))

    install_error_handlers(app)
    app.include_router(router)
    return app


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    svc = make_service("sqlite", "", tmp_path, FakeClock(time.time()))
    await svc.start()
    transport = httpx.ASGITransport(app=build_app(svc))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://herald", headers=AUTH
        ) as client:
            yield client
    finally:
        await svc.close()


def code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


async def test_queue_routes(http: httpx.AsyncClient) -> None:
    r = await http.put("/v1/queues/jobs", json={"visibility_timeout": 5})
    assert r.status_code == 200 and r.json()["visibility_timeout"] == 5
    assert r.json()["visible"] == 0
    assert (await http.put("/v1/queues/dlq")).status_code == 200  # no body: defaults
    assert [q["name"] for q in (await http.get("/v1/queues")).json()["queues"]] == ["dlq", "jobs"]

    r = await http.post("/v1/queues/jobs/messages", json={"body": None, "attributes": {"a": 1}})
    assert r.status_code == 201 and set(r.json()) == {"id"}
    r = await http.post(
        "/v1/queues/jobs/messages/batch",
        json={"entries": [{"body": 1}, {"body": 2, "priority": 99}]},
    )
    results = r.json()["results"]
    assert r.status_code == 200 and "id" in results[0]
    assert results[1]["error"]["code"] == "invalid_request"

    r = await http.post("/v1/queues/jobs/receive", json={"max": 10})
    msgs = r.json()["messages"]
    assert [m["body"] for m in msgs] == [None, 1] and msgs[0]["attributes"] == {"a": 1}
    assert set(msgs[0]) == {
        "id",
        "receipt",
        "body",
        "attributes",
        "receive_count",
        "sent_at",
        "first_received_at",
    }
    r = await http.post("/v1/queues/jobs/ack", json={"receipts": [msgs[0]["receipt"], "x.y"]})
    assert [("ok" in x, "error" in x) for x in r.json()["results"]] == [
        (True, False),
        (False, True),
    ]
    r = await http.post(
        "/v1/queues/jobs/visibility", json={"receipt": msgs[1]["receipt"], "timeout": 60}
    )
    assert r.status_code == 200
    r = await http.post("/v1/queues/jobs/nack", json={"receipt": msgs[1]["receipt"]})
    assert r.status_code == 200
    r = await http.post("/v1/queues/jobs/nack", json={"receipt": msgs[1]["receipt"]})
    assert r.status_code == 400 and code(r) == "receipt_invalid"
    assert (await http.post("/v1/queues/jobs/purge")).json() == {"purged": 1}
    assert (await http.post("/v1/queues/dlq/redrive")).json() == {"moved": 0}
    assert (await http.get("/v1/queues/jobs")).json()["sent_total"] == 2
    assert (await http.delete("/v1/queues/jobs")).status_code == 204
    r = await http.get("/v1/queues/jobs")
    assert r.status_code == 404 and code(r) == "queue_not_found"


async def test_validation_and_auth(http: httpx.AsyncClient) -> None:
    await http.put("/v1/queues/jobs")
    cases = [
        ("PUT", "/v1/queues/jobs", {"visibility_timeout": 50_000}),
        ("PUT", "/v1/queues/jobs", {"colour": "blue"}),
        ("PUT", "/v1/queues/bad name", {}),
        ("POST", "/v1/queues/jobs/messages", {"attributes": {}}),
        ("POST", "/v1/queues/jobs/messages/batch", {"entries": [{"body": i} for i in range(101)]}),
        ("POST", "/v1/queues/jobs/receive", {"max": 0}),
        ("POST", "/v1/queues/jobs/receive", {"wait": 21}),
        ("POST", "/v1/queues/jobs/ack", {"receipts": []}),
    ]
    for method, path, body in cases:
        r = await http.request(method, path, json=body)
        assert (r.status_code, code(r)) == (400, "invalid_request"), (path, body)
    await http.put("/v1/queues/tiny", json={"max_message_bytes": 1024, "max_depth": 1})
    r = await http.post("/v1/queues/tiny/messages", json={"body": "x" * 2000})
    assert (r.status_code, code(r)) == (413, "payload_too_large")
    await http.post("/v1/queues/tiny/messages", json={"body": 1})
    r = await http.post("/v1/queues/tiny/messages", json={"body": 2})
    assert (r.status_code, code(r)) == (503, "queue_full")
    r = await http.get("/v1/queues", headers={"Authorization": "Bearer wrong"})
    assert (r.status_code, code(r)) == (401, "unauthorized")


async def test_subscription_routes(http: httpx.AsyncClient) -> None:
    await http.put("/v1/queues/audit")
    r = await http.post(
        "/v1/subscriptions",
        json={
            "topic": "orders.>",
            "queue": "audit",
            "filter_policy": {"eventType": ["order.created"]},
        },
    )
    assert r.status_code == 201
    sub_id = r.json()["id"]
    listed = (await http.get("/v1/subscriptions")).json()["subscriptions"]
    assert [s["id"] for s in listed] == [sub_id]
    r = await http.post("/v1/subscriptions", json={"topic": "orders..", "queue": "audit"})
    assert (r.status_code, code(r)) == (400, "invalid_topic")
    r = await http.post(
        "/v1/subscriptions",
        json={"topic": "a", "queue": "audit", "filter_policy": {"k": [{"x": 1}]}},
    )
    assert (r.status_code, code(r)) == (400, "invalid_filter")
    r = await http.post("/v1/subscriptions", json={"topic": "a", "queue": "nope"})
    assert (r.status_code, code(r)) == (404, "queue_not_found")
    assert (await http.delete(f"/v1/subscriptions/{sub_id}")).status_code == 204
    r = await http.delete(f"/v1/subscriptions/{sub_id}")
    assert (r.status_code, code(r)) == (404, "subscription_not_found")


async def test_http_long_poll_returns_on_send(http: httpx.AsyncClient) -> None:
    await http.put("/v1/queues/jobs")

    sender = after(100 * MS, lambda: http.post("/v1/queues/jobs/messages", json={"body": "hi"}))
    started = time.monotonic()
    r = await http.post("/v1/queues/jobs/receive", json={"wait": 5})
    await sender
    assert [m["body"] for m in r.json()["messages"]] == ["hi"]
    assert time.monotonic() - started < 2000 * MS


async def test_openapi_documents_queue_bodies(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert {"/v1/queues/{name}/receive", "/v1/subscriptions", "/v1/queues/{name}/redrive"} <= set(
        spec["paths"]
    )
    assert {"SendIn", "ReceiveIn", "QueueAttributesIn", "SubscriptionIn"} <= set(
        spec["components"]["schemas"]
    )


# ---- the CLI against a real server ------------------------------------------------------------


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        build_app(data_dir=tmp_path),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10_000 * MS
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(20 * MS)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_cli_round_trip(server_url: str) -> None:
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> Any:
        result = runner.invoke(queue_app, [*args, "--url", server_url, "--token", KEY])
        assert (result.exit_code == 0) == ok, result.output
        return json.loads(result.stdout) if ok else None

    run("create", "dead")
    made = run(
        "create",
        "jobs",
        "--visibility-timeout",
        "0",
        "--dead-letter",
        "dead",
        "--max-receive-count",
        "1",
    )
    assert made["dead_letter"] == {"queue": "dead", "max_receive_count": 1}
    sent = run(
        "send", "jobs", '{"n": 1}', "--attr", "kind=a", "--attr", "size:=3", "--priority", "2"
    )
    [msg] = run("receive", "jobs", "--max", "5")["messages"]
    assert msg["id"] == sent["id"] and msg["attributes"] == {"kind": "a", "size": 3}
    # visibility 0: visible again at once; the next receive exceeds max_receive_count.
    assert run("receive", "jobs", "--wait", "0")["messages"] == []
    assert run("stats", "dead")["visible"] == 1
    assert run("redrive", "dead") == {"moved": 1}
    [again] = run("receive", "jobs")["messages"]
    assert run("ack", "jobs", again["receipt"])["results"][0]["ok"] is True
    run("ack", "jobs", again["receipt"], ok=False)  # already deleted
    assert [q["name"] for q in run("stats")["queues"]] == ["dead", "jobs"]
    run("create", "orders.fifo", "--fifo", "--content-dedup")
    run("send", "orders.fifo", "1", "--group-id", "g", "--dedup-id", "d1")
    run("send", "nope", "1", ok=False)

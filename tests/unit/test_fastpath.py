"""The publish fast path (gateway/fastpath.py) answers exactly as the FastAPI routes do.

Each request goes to the app as uvicorn serves it (the fast path in front of FastAPI, as
`create_asgi_app` builds it) and to the FastAPI app alone, on nodes built alike:
status, body and content type must match, for plain publishes (served by the fast path)
and for everything it hands to FastAPI or to the `HeraldError` handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from fanout.memory import MemoryBackplane
from fanout.node import Node
from fanout.queues import open_queue_service
from gateway import fastpath
from gateway.app import body_limit, create_app
from gateway.fastpath import PublishFastPath
from shared.config import Settings
from shared.jsonvalue import MAX_DEPTH

KEY = "k-fast"
JSON = {"content-type": "application/json"}
AUTH = {**JSON, "authorization": f"Bearer {KEY}"}


async def _client(
    fast: bool, settings: Settings, queues_dir: Path | None = None
) -> tuple[httpx.AsyncClient, Node]:
    app: FastAPI = create_app(settings)
    queues = None
    if queues_dir is not None:
        queues = open_queue_service(engine="memory", data_dir=queues_dir, redis_url="")
    node = Node(settings, MemoryBackplane(), queues=queues)
    await node.start()
    app.state.node = node
    served = PublishFastPath(app, body_limit(settings)) if fast else app
    transport = httpx.ASGITransport(app=served)
    return httpx.AsyncClient(transport=transport, base_url="http://herald"), node


@pytest.fixture
async def pair() -> AsyncIterator[list[httpx.AsyncClient]]:
    # A burst of 600 leaves every case below within the limit, but for the last ones.
    settings = Settings(
        api_keys=[KEY], data_dir="/nonexistent", http_publish_rate=1, http_publish_burst=600
    )
    made = [await _client(fast, settings) for fast in (True, False)]
    yield [c for c, _ in made]
    for client, node in made:
        await client.aclose()
        await node.stop()


MSG = {"topic": "game.1", "data": {"home": 2}, "id": "m1"}
DEEP: Any = 1
for _ in range(70):
    DEEP = [DEEP]


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("/v1/publish", AUTH, orjson.dumps(MSG)),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "attributes": {"a": "x", "n": 1.5}})),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "extra": 1})),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "attributes": {"a": {"deep": 1}}})),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "topic": 7})),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "topic": "a..b"})),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "id": 5})),
    ("/v1/publish", AUTH, orjson.dumps([MSG])),
    ("/v1/publish", AUTH, b'{"topic": "game.1", "data": NaN, "id": "m1"}'),
    ("/v1/publish", AUTH, b'{"topic": "game.1", "data": "\\ud800", "id": "m1"}'),
    ("/v1/publish", AUTH, b'{"topic": "game.1"'),
    ("/v1/publish", AUTH, b""),
    ("/v1/publish", {**AUTH, "content-type": "text/plain"}, orjson.dumps(MSG)),
    ("/v1/publish", JSON, orjson.dumps(MSG)),
    ("/v1/publish", {**JSON, "authorization": "Bearer nope"}, orjson.dumps(MSG)),
    # Values are checked before the caller, on both paths (shared/jsonvalue.py).
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "data": DEEP})),
    ("/v1/publish", JSON, orjson.dumps({**MSG, "data": DEEP})),
    ("/v1/publish", JSON, b'{"topic": "game.1", "data": 1e999}'),
    # At the depth limit and one past it; brackets in strings only look deep.
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "data": _nested(MAX_DEPTH)})),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "data": _nested(MAX_DEPTH + 1)})),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "data": {"a": _nested(MAX_DEPTH - 1)}})),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "data": {"a": _nested(MAX_DEPTH)}})),
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "data": "[{" * 100})),
    # 19 digits in all, never 19 in a row; then 19 in a row (over 64 bits).
    ("/v1/publish", AUTH, orjson.dumps({**MSG, "data": [1234567890, 123456789]})),
    ("/v1/publish", AUTH, b'{"topic": "game.1", "data": 9999999999999999999999}'),
    ("/v1/publish", AUTH, b'{"topic": "game.1", "data": 18446744073709551616}'),
    ("/v1/publish", AUTH, b'{"topic": "game.1", "data": -9223372036854775809}'),
    ("/v1/publish", AUTH, b'{"topic": "game.1", "data": [1e999]}'),
    ("/v1/publish", AUTH, b'\xef\xbb\xbf{"topic": "game.1", "id": "m1"}'),
    ("/v1/publish/batch", AUTH, orjson.dumps({"messages": [{**MSG, "data": DEEP}, MSG]})),
    (
        "/v1/publish/batch",
        AUTH,
        orjson.dumps({"messages": [MSG, {**MSG, "id": "m2", "topic": "a..b"}, 3]}),
    ),
    (
        "/v1/publish/batch",
        AUTH,
        b'{"messages": [{"topic": "game.1", "data": [12345, 18446744073709551616]}]}',
    ),
    ("/v1/publish/batch", AUTH, orjson.dumps({"messages": [{**MSG, "id": "1" * 19}]})),
    ("/v1/publish/batch", AUTH, orjson.dumps({"messages": [MSG] * 501})),
    ("/v1/publish/batch", AUTH, orjson.dumps({"messages": MSG})),
    ("/v1/publish/batch", AUTH, orjson.dumps({"messages": [], "other": 1})),
    ("/v1/publish/batch", JSON, orjson.dumps({"messages": [MSG]})),
    ("/v1/publish/batch", AUTH, orjson.dumps({"entries": [MSG, {**MSG, "id": "m2"}]})),
    ("/v1/publish/batch", AUTH, orjson.dumps({"entries": []})),
    ("/v1/publish/batch", AUTH, orjson.dumps({"entries": [MSG], "messages": [MSG]})),
    ("/v1/publish/batch", AUTH, orjson.dumps({})),
]


def _seen(r: httpx.Response) -> tuple[int, str | None, Any]:
    return r.status_code, r.headers.get("content-type"), r.json() if r.content else None


@pytest.mark.parametrize(("path", "headers", "body"), CASES)
async def test_same_reply_with_and_without_the_fast_path(
    pair: list[httpx.AsyncClient], path: str, headers: dict[str, str], body: bytes
) -> None:
    fast, slow = pair
    got = _seen(await fast.post(path, content=body, headers=headers))
    want = _seen(await slow.post(path, content=body, headers=headers))
    assert got == want
    assert got[0] != 500


async def test_rate_limited_alike(pair: list[httpx.AsyncClient]) -> None:
    fast, slow = pair
    batch = orjson.dumps({"messages": [{**MSG, "id": f"r{i}"} for i in range(500)]})
    for client in (fast, slow):
        assert (
            await client.post("/v1/publish/batch", content=batch, headers=AUTH)
        ).status_code == 202
    got = await fast.post("/v1/publish/batch", content=batch, headers=AUTH)
    want = await slow.post("/v1/publish/batch", content=batch, headers=AUTH)
    assert got.status_code == want.status_code == 429
    assert got.headers["retry-after"] == want.headers["retry-after"]
    assert got.json()["error"]["code"] == want.json()["error"]["code"] == "rate_limited"


async def test_a_body_over_the_limit_is_413_on_the_fast_path(
    pair: list[httpx.AsyncClient],
) -> None:
    fast, _ = pair
    big = orjson.dumps({**MSG, "data": "x" * body_limit(Settings())})
    r = await fast.post("/v1/publish", content=big, headers=AUTH)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One "fallback" per request the fast path hands on to FastAPI."""
    calls: list[str] = []
    real = fastpath._replay
    monkeypatch.setattr(fastpath, "_replay", lambda *a: calls.append("fallback") or real(*a))
    return calls


async def test_plain_publishes_do_not_reach_fastapi(
    pair: list[httpx.AsyncClient], fallbacks: list[str]
) -> None:
    """The point of the module: FastAPI's handler is not run for the plain case."""
    fast, _ = pair
    r = await fast.post("/v1/publish", content=orjson.dumps(MSG), headers=AUTH)
    assert r.status_code == 202
    batch = orjson.dumps({"messages": [MSG]})
    assert (await fast.post("/v1/publish/batch", content=batch, headers=AUTH)).status_code == 202
    assert fallbacks == []
    r = await fast.post("/v1/publish", content=orjson.dumps({**MSG, "x": 1}), headers=AUTH)
    assert r.status_code == 202
    assert fallbacks == ["fallback"]


async def test_entries_batches_do_not_reach_fastapi(
    pair: list[httpx.AsyncClient], fallbacks: list[str]
) -> None:
    """`entries` is the documented field: it must take the fast path, not only `messages`."""
    fast, _ = pair
    batch = orjson.dumps({"entries": [MSG]})
    assert (await fast.post("/v1/publish/batch", content=batch, headers=AUTH)).status_code == 202
    assert fallbacks == []


async def test_browser_requests_get_cors_headers() -> None:
    """A request with an Origin goes through the app's CORS middleware."""
    settings = Settings(
        api_keys=[KEY], data_dir="/nonexistent", allowed_origins=["https://a.example"]
    )
    client, node = await _client(True, settings)
    try:
        headers = {**AUTH, "origin": "https://a.example"}
        r = await client.post("/v1/publish", content=orjson.dumps(MSG), headers=headers)
        assert r.status_code == 202
        assert r.headers["access-control-allow-origin"] == "https://a.example"
    finally:
        await client.aclose()
        await node.stop()


async def test_fast_replies_are_in_the_latency_histogram() -> None:
    """The app's RequestTimer does not see fast replies: the fast path observes them."""
    settings = Settings(api_keys=[KEY], data_dir="/nonexistent")
    client, node = await _client(True, settings)
    served = client._transport.app  # type: ignore[attr-defined]
    registry = served.app.state.telemetry.registry
    labels = {"method": "POST", "route": "/v1/publish", "status": "202"}
    try:
        before = registry.get_sample_value("herald_http_request_duration_seconds_count", labels)
        for i in range(3):
            body = orjson.dumps({**MSG, "id": f"h{i}"})
            assert (await client.post("/v1/publish", content=body, headers=AUTH)).status_code == 202
        after = registry.get_sample_value("herald_http_request_duration_seconds_count", labels)
        assert after == (before or 0) + 3
    finally:
        await client.aclose()
        await node.stop()


# ---- queues: send batch, receive, ack ---------------------------------------------------------

Q = "/v1/queues/q"
ENTRY = {"body": {"n": 1}, "attributes": {"k": "v"}}
QUEUE_CASES: list[tuple[str, dict[str, str], bytes]] = [
    (Q + "/messages/batch", AUTH, orjson.dumps({"entries": [ENTRY, {"body": [1, 2]}]})),
    (Q + "/messages/batch", AUTH, orjson.dumps({"entries": [ENTRY, {"nobody": 1}, 5]})),
    (Q + "/messages/batch", AUTH, orjson.dumps({"entries": [{"body": DEEP}]})),
    (Q + "/messages/batch", AUTH, orjson.dumps({"entries": [ENTRY], "x": 1})),
    (Q + "/messages/batch", AUTH, orjson.dumps({"entries": []})),
    (Q + "/messages/batch", AUTH, orjson.dumps({"entries": [ENTRY] * 101})),
    (Q + "/messages/batch", JSON, orjson.dumps({"entries": [ENTRY]})),
    ("/v1/queues/nope/messages/batch", AUTH, orjson.dumps({"entries": [ENTRY]})),
    ("/v1/queues/bad name!/messages/batch", AUTH, orjson.dumps({"entries": [ENTRY]})),
    (Q + "/receive", AUTH, orjson.dumps({"max": 2})),
    (Q + "/receive", AUTH, orjson.dumps({"max": 2, "wait": 0, "visibility_timeout": None})),
    (Q + "/receive", AUTH, orjson.dumps({"max": 0})),
    (Q + "/receive", AUTH, orjson.dumps({"max": True})),
    (Q + "/receive", AUTH, orjson.dumps({"max": 1.0})),
    (Q + "/receive", AUTH, orjson.dumps({"wait": "1"})),
    (Q + "/receive", AUTH, orjson.dumps({"max": 1, "other": 1})),
    (Q + "/receive", JSON, orjson.dumps({"max": 1})),
    ("/v1/queues/nope/receive", AUTH, orjson.dumps({"max": 1})),
    (Q + "/ack", AUTH, orjson.dumps({"receipts": ["nope", "a.b"]})),
    (Q + "/ack", AUTH, orjson.dumps({"receipts": []})),
    (Q + "/ack", AUTH, orjson.dumps({"receipts": [1]})),
    (Q + "/ack", {**JSON, "authorization": "Bearer nope"}, orjson.dumps({"receipts": ["a.b"]})),
]


def _same_shape(value: Any) -> Any:
    """Ids, receipts and times differ between two servers; everything else must not."""
    if isinstance(value, dict):
        return {
            k: "*" if k in ("id", "receipt", "sent_at", "first_received_at") else _same_shape(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_same_shape(v) for v in value]
    return value


async def test_queue_routes_reply_alike(tmp_path: Path) -> None:
    """One sequence of calls on two queue services: same replies, but for ids and times."""
    settings = Settings(api_keys=[KEY], data_dir=str(tmp_path))
    made = [await _client(fast, settings, tmp_path / str(fast)) for fast in (True, False)]
    try:
        for client, _ in made:
            r = await client.put(Q, content=b"{}", headers=AUTH)
            assert r.status_code == 200, r.text
        for path, headers, body in QUEUE_CASES:
            got, want = [
                _seen(await client.post(path, content=body, headers=headers)) for client, _ in made
            ]
            assert _same_shape(got) == _same_shape(want), (path, body)
            assert got[0] != 500
        # Receipts are per server: ack what each one handed out.
        batch = orjson.dumps({"entries": [ENTRY] * 3})
        for client, _ in made:
            r = await client.post(Q + "/messages/batch", content=batch, headers=AUTH)
            assert r.status_code == 200
            got = (await client.post(Q + "/receive", content=b'{"max":5}', headers=AUTH)).json()
            receipts = [m["receipt"] for m in got["messages"]]
            assert receipts
            r = await client.post(
                Q + "/ack", content=orjson.dumps({"receipts": receipts}), headers=AUTH
            )
            assert r.status_code == 200
            assert all(x.get("ok") for x in r.json()["results"]), r.json()
    finally:
        for client, node in made:
            await client.aclose()
            await node.stop()

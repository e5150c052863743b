"""Issue 9: hostile input to a real `herald serve` gets a clear 4xx, never a 500."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from procs import HeraldServer
from wsclient import collect, connect, recv_json, subscribe

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}
SECRET = "hostile-input-secret-of-at-least-32-bytes"


@pytest.fixture(scope="module")
def server() -> Iterator[HeraldServer]:
    s = HeraldServer().start()
    yield s
    s.stop()
    assert "Traceback" not in s.output()


@pytest.fixture
async def http(server: HeraldServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http) as c:
        yield c


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def test_bare_wildcard_alone_receives(server: HeraldServer, http: httpx.AsyncClient) -> None:
    ws = await connect(server.ws)
    await subscribe(ws, ">")
    assert (await http.post("/v1/publish", json={"topic": "rt.a", "data": 1})).status_code == 202
    [msg] = await collect(ws, 1)
    assert msg["topic"] == "rt.a"
    await ws.close()


BAD_VALUES = [b'"\\ud800"', b'"x\\udc00y"', b"NaN", b"-Infinity", b"1e999", b"18446744073709551616"]


@pytest.mark.parametrize("value", BAD_VALUES)
async def test_bad_json_values_are_400(http: httpx.AsyncClient, value: bytes) -> None:
    await http.put("/v1/queues/values")
    cases = [
        ("/v1/publish", b'{"topic":"a.b","data":%s}'),
        ("/v1/publish", b'{"topic":"a.b","data":{"k":[%s]}}'),
        ("/v1/publish", b'{"topic":"a.b","attributes":{"k":%s}}'),
        ("/v1/queues/values/messages", b'{"body":%s}'),
        ("/v1/subscriptions", b'{"topic":"a.>","queue":"values","filter_policy":{"k":[%s]}}'),
    ]
    for path, template in cases:
        r = await http.post(path, content=template % value, headers=JSON)
        assert r.status_code == 400, (path, value, r.text)
        assert r.json()["error"]["code"] in ("invalid_request", "invalid_filter")


async def test_lone_surrogate_keys_are_400(http: httpx.AsyncClient) -> None:
    await http.put("/v1/queues/keys")
    for path, body in [
        ("/v1/publish", b'{"topic":"a.b","data":{"\\ud800":1}}'),
        ("/v1/publish", b'{"topic":"a.\\ud800"}'),
        ("/v1/subscriptions", b'{"topic":"a.>","queue":"keys","filter_policy":{"\\ud800":["x"]}}'),
        ("/v1/queues/keys/ack", b'{"receipts":["\\ud800.x"]}'),
    ]:
        r = await http.post(path, content=body, headers=JSON)
        assert r.status_code == 400, (path, r.text)


async def test_batches_refuse_bad_entries_one_by_one(http: httpx.AsyncClient) -> None:
    await http.put("/v1/queues/batchq")
    r = await http.post(
        "/v1/publish/batch",
        content=b'{"messages":[{"topic":"a.b","data":"\\ud800"},{"topic":"a.b","data":NaN},'
        b'{"topic":"a.b","data":1}]}',
        headers=JSON,
    )
    assert r.status_code == 202, r.text
    first, second, third = r.json()["results"]
    assert first["error"]["code"] == second["error"]["code"] == "invalid_request"
    assert "id" in third
    r = await http.post(
        "/v1/queues/batchq/messages/batch",
        content=b'{"entries":[{"body":"\\ud800"},{"body":1e999},{"body":'
        + nested(100)
        + b'},{"body":2}]}',
        headers=JSON,
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [("error" in x) for x in results] == [True, True, True, False]


async def test_deep_queue_bodies_are_refused_at_send(http: httpx.AsyncClient) -> None:
    await http.put("/v1/queues/deep")
    for depth in (65, 252, 254):
        r = await http.post(
            "/v1/queues/deep/messages", content=b'{"body":%s}' % nested(depth), headers=JSON
        )
        assert r.status_code == 400, (depth, r.text)
        assert "nested" in r.json()["error"]["message"]
    # The deepest accepted body is received intact, also through a topic subscription.
    assert (
        await http.post("/v1/subscriptions", json={"topic": "deep.>", "queue": "deep"})
    ).status_code == 201
    r = await http.post(
        "/v1/queues/deep/messages", content=b'{"body":%s}' % nested(64), headers=JSON
    )
    assert r.status_code == 201, r.text
    r = await http.post(
        "/v1/publish", content=b'{"topic":"deep.a","data":%s}' % nested(64), headers=JSON
    )
    assert r.status_code == 202, r.text
    r = await http.post(
        "/v1/publish", content=b'{"topic":"deep.a","data":%s}' % nested(65), headers=JSON
    )
    assert r.status_code == 400, r.text
    r = await http.post("/v1/queues/deep/receive", json={"max": 10})
    assert r.status_code == 200, r.text
    assert len(r.json()["messages"]) == 2


async def test_deep_data_over_websocket_is_refused(server: HeraldServer) -> None:
    ws = await connect(server.ws)
    data = json.loads(nested(200))
    await ws.send(json.dumps({"op": "publish", "id": 1, "topic": "a.b", "data": data}))
    reply = await recv_json(ws)
    assert reply["op"] == "error" and reply["code"] == "invalid_request", reply
    await ws.close()


@pytest.mark.parametrize("value", ["30", True, "1e3", [30]])
async def test_http_numbers_are_strict_like_the_websocket(
    http: httpx.AsyncClient, value: object
) -> None:
    assert (await http.put("/v1/queues/strict")).is_success
    for method, path, body in [
        ("PUT", "/v1/queues/strict", {"visibility_timeout": value}),
        ("PUT", "/v1/queues/strict", {"dead_letter": {"queue": "x", "max_receive_count": value}}),
        ("POST", "/v1/queues/strict/receive", {"max": value}),
        ("POST", "/v1/queues/strict/receive", {"wait": value}),
        ("POST", "/v1/queues/strict/messages", {"body": 1, "delay": value}),
        ("POST", "/v1/queues/strict/messages", {"body": 1, "priority": value}),
        ("POST", "/v1/queues/strict/nack", {"receipt": "a.b", "delay": value}),
        ("POST", "/v1/queues/strict/visibility", {"receipt": "a.b", "timeout": value}),
    ]:
        r = await http.request(method, path, json=body)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
    r = await http.put("/v1/queues/strict", json={"visibility_timeout": 30, "max_depth": 5})
    assert r.status_code == 200 and r.json()["visibility_timeout"] == 30
    r = await http.post("/v1/publish", json={"topic": 5})
    assert r.status_code == 400


async def test_ws_numbers_are_strict(server: HeraldServer) -> None:
    ws = await connect(server.ws)
    await ws.send(json.dumps({"op": "subscribe", "id": 1, "topic": "a.b", "batch_ms": "30"}))
    reply = await recv_json(ws)
    assert reply["op"] == "error" and reply["code"] == "invalid_request"
    await ws.close()


@pytest.fixture(scope="module", params=["memory", "redis"])
def engine_server(request: pytest.FixtureRequest) -> Iterator[HeraldServer]:
    """A server with history on `h.>`, on each engine (redis: the session's redis-server)."""
    env = {"HERALD_HISTORY": '[{"pattern": "h.>", "size": 100}]'}
    if request.param == "redis":
        env |= {
            "HERALD_ENGINE": "redis",
            "HERALD_REDIS_URL": request.getfixturevalue("shared_redis").url,
        }
    s = HeraldServer(env=env).start()
    yield s
    s.stop()
    assert "Traceback" not in s.output()


@pytest.mark.parametrize("since", [2**53, 2**63, 10**30])
async def test_huge_since_is_400_on_both_engines(engine_server: HeraldServer, since: int) -> None:
    async with httpx.AsyncClient(base_url=engine_server.http) as c:
        assert (await c.post("/v1/publish", json={"topic": "h.a", "data": 1})).status_code == 202
        r = await c.get("/v1/topics/h.a/history", params={"since": since})
        assert r.status_code == 400, r.text
        r = await c.get("/v1/topics/h.a/history", params={"since": 2**53 - 1})
        assert r.status_code == 200, r.text
    ws = await connect(engine_server.ws)
    await ws.send(json.dumps({"op": "subscribe", "id": 1, "topic": "h.a", "since": since}))
    reply = await recv_json(ws)
    assert reply["op"] == "error" and reply["code"] == "invalid_request", reply
    await ws.close()


async def test_chunked_body_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    """Without Content-Length the limit is found while reading: still 413, not 400."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"topic":"a.b","data":"'
        for _ in range(40):  # 40 MiB: over the limit of any default setting
            yield b"x" * (1 << 20)
        yield b'"}'

    for path in ("/v1/publish", "/v1/publish/batch", "/v1/queues/values/messages"):
        r = await http.post(path, content=chunks(), headers=JSON)
        assert r.status_code == 413, (path, r.text)
        assert r.json()["error"]["code"] == "payload_too_large"


@pytest.fixture(scope="module")
def auth_server() -> Iterator[HeraldServer]:
    s = HeraldServer(env={"HERALD_JWT_SECRET": SECRET}).start()
    yield s
    s.stop()


@pytest.mark.parametrize("admin", ["false", "true", 1])
async def test_admin_claim_must_be_a_json_boolean(auth_server: HeraldServer, admin: object) -> None:
    t = jwt.encode({"sub": "u", "exp": int(time.time()) + 60, "admin": admin}, SECRET)
    async with httpx.AsyncClient(base_url=auth_server.http) as c:
        r = await c.get("/v1/queues", headers={"authorization": f"Bearer {t}"})
        assert r.status_code == 401, r.text
    ws = await connect(auth_server.ws + f"?token={t}")
    with pytest.raises(ConnectionClosed):
        await recv_json(ws)
    assert ws.close_code == 4401
    ws = await connect(auth_server.ws)
    await ws.send(json.dumps({"op": "auth", "id": 1, "token": t}))
    with pytest.raises(ConnectionClosed):
        await recv_json(ws)
    assert ws.close_code == 4401


@pytest.fixture(scope="module")
def limited_server() -> Iterator[HeraldServer]:
    # One token per 100 s: the test never waits for a refill.
    env = {
        "HERALD_API_KEYS": "key-a,key-b",
        "HERALD_HTTP_PUBLISH_RATE": "0.01",
        "HERALD_HTTP_PUBLISH_BURST": "3",
    }
    s = HeraldServer(env=env).start()
    yield s
    s.stop()


async def test_http_publish_rate_limit_per_api_key(limited_server: HeraldServer) -> None:
    msg = {"topic": "a.b", "data": 1}
    async with httpx.AsyncClient(base_url=limited_server.http) as c:
        a = {"authorization": "Bearer key-a"}
        b = {"authorization": "Bearer key-b"}
        for _ in range(3):
            assert (await c.post("/v1/publish", json=msg, headers=a)).status_code == 202
        r = await c.post("/v1/publish", json=msg, headers=a)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        r = await c.post("/v1/publish/batch", json={"messages": [msg] * 2}, headers=a)
        assert r.status_code == 429
        # Another key has its own bucket; a batch costs one token per message.
        r = await c.post("/v1/publish/batch", json={"messages": [msg] * 2}, headers=b)
        assert r.status_code == 202
        assert (await c.post("/v1/publish", json=msg, headers=b)).status_code == 202
        assert (await c.post("/v1/publish", json=msg, headers=b)).status_code == 429


async def test_http_publish_is_not_limited_in_dev_mode(http: httpx.AsyncClient) -> None:
    msgs = {"messages": [{"topic": "a.b", "data": i} for i in range(500)]}
    for _ in range(6):  # 3,000 messages at once: far over the authenticated default burst
        assert (await http.post("/v1/publish/batch", json=msgs)).status_code == 202

"""A real `herald serve` answers the fast routes from its HTTP protocol (gateway.httpproto)
with the bytes uvicorn's ASGI cycle gives for the same reply.

The same gateway serves both: `/v1/publish?via=asgi` is not served directly (a query
string goes to uvicorn's cycle), and PublishFastPath answers it there as before. Only the
`date` header may differ (a second may turn between two replies).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import orjson
import pytest

from procs import HeraldServer, RedisServer, running

pytestmark = pytest.mark.integration

KEY = "k-direct"
AUTH = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
DATE = re.compile(rb"\r\ndate: [^\r]*\r\n")


def post(path: str, headers: dict[str, str], body: bytes, version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nhost: herald\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def exchange(port: int, request: bytes, replies: int = 1) -> list[bytes]:
    """Send `request` (maybe several, pipelined) on one connection; read `replies`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        stream = sock.makefile("rb")
        got = []
        for _ in range(replies):
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += stream.readline()
            length = int(re.search(rb"content-length: (\d+)", head)[1])  # type: ignore[index]
            got.append(head + stream.read(length))
        return got


def undated(reply: bytes) -> bytes:
    assert len(DATE.findall(reply)) == 1  # uvicorn's default headers, on both paths
    return DATE.sub(b"\r\ndate: *\r\n", reply)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with running(server := RedisServer()):
        yield server


@pytest.fixture(scope="module", params=["memory", "redis"])
def gateway(request: pytest.FixtureRequest, redis: RedisServer) -> Iterator[HeraldServer]:
    env = {"HERALD_API_KEYS": KEY, "HERALD_ENGINE": request.param}
    if request.param == "redis":
        env["HERALD_REDIS_URL"] = redis.url
    with running(server := HeraldServer(env=env)):
        yield server


def _msg(i: str, **extra: object) -> bytes:
    return orjson.dumps({"topic": "game.1", "data": {"n": 1}, "id": i, **extra})


CASES = [
    ("/v1/publish", AUTH, "1.1"),
    ("/v1/publish", AUTH, "1.0"),
    ("/v1/publish", {**AUTH, "connection": "close"}, "1.1"),
    ("/v1/publish", {"content-type": "application/json"}, "1.1"),  # 401
    ("/v1/publish", {**AUTH, "authorization": "Bearer nope"}, "1.1"),  # 401
]


@pytest.mark.parametrize(("path", "headers", "version"), CASES)
def test_a_reply_is_the_same_bytes_either_way(
    gateway: HeraldServer, path: str, headers: dict[str, str], version: str
) -> None:
    idx = f"{gateway.env['HERALD_ENGINE']}-{version}-{len(headers)}"
    (direct,) = exchange(gateway.port, post(path, headers, _msg(idx), version))
    (asgi,) = exchange(gateway.port, post(path + "?via=asgi", headers, _msg(idx), version))
    assert undated(direct) == undated(asgi)
    assert b"server: uvicorn\r\n" in direct


def test_a_bad_topic_is_the_same_400_either_way(gateway: HeraldServer) -> None:
    body = _msg("bad", topic="a..b")
    (direct,) = exchange(gateway.port, post("/v1/publish", AUTH, body))
    (asgi,) = exchange(gateway.port, post("/v1/publish?via=asgi", AUTH, body))
    assert direct.startswith(b"HTTP/1.1 400")
    assert undated(direct) == undated(asgi)


def test_pipelined_replies_come_in_request_order(gateway: HeraldServer) -> None:
    engine = gateway.env["HERALD_ENGINE"]
    ids = [f"{engine}-pipe-{i}" for i in range(6)]
    requests = [
        post("/v1/publish", AUTH, _msg(ids[0])),
        post("/v1/publish", AUTH, _msg(ids[1], extra=1)),  # FastAPI answers
        post("/v1/publish", AUTH, _msg(ids[2])),
        post("/v1/publish", {"content-type": "application/json"}, _msg(ids[3])),  # 401
        post("/v1/publish?via=asgi", AUTH, _msg(ids[4])),
        post("/v1/publish", AUTH, _msg(ids[5])),
    ]
    replies = exchange(gateway.port, b"".join(requests), len(requests))
    for i, reply in enumerate(replies):
        if i == 3:
            assert reply.startswith(b"HTTP/1.1 401")
        else:
            assert reply.startswith(b"HTTP/1.1 202")
            assert orjson.loads(reply.split(b"\r\n\r\n", 1)[1])["id"] == ids[i]


def test_a_rate_limited_publish_is_the_same_429_either_way() -> None:
    # One message per 1000 s: the wait differs between the two by the time between them.
    env = {
        "HERALD_API_KEYS": KEY,
        "HERALD_HTTP_PUBLISH_RATE": "0.001",
        "HERALD_HTTP_PUBLISH_BURST": "2",
    }
    with running(server := HeraldServer(env=env)):
        ok = exchange(server.port, post("/v1/publish", AUTH, _msg("r1")) * 2, 2)
        assert all(r.startswith(b"HTTP/1.1 202") for r in ok)
        (direct,) = exchange(server.port, post("/v1/publish", AUTH, _msg("r2")))
        (asgi,) = exchange(server.port, post("/v1/publish?via=asgi", AUTH, _msg("r3")))
    heads = []
    for reply in (direct, asgi):
        head, body = undated(reply).split(b"\r\n\r\n")
        assert orjson.loads(body)["error"]["code"] == "rate_limited"
        heads.append(re.sub(rb"content-length: \d+", b"content-length: *", head))
    assert heads[0] == heads[1]
    assert heads[0].startswith(b"HTTP/1.1 429") and b"\r\nretry-after: 1000" in heads[0]

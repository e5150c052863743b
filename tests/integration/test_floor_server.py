"""The benchmarks' floors (loadtest/floor_server.py) against real clients: a floor that
stopped routing or framing would make every "× floor" figure wrong without failing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from loadtest.fanout_micro import Floor
from loadtest.loadclient import LoadClient
from procs import MS, PY, free_port, spawn, stop_pid, wait_port

pytestmark = pytest.mark.integration


@pytest.fixture
def fanout_floor() -> Iterator[int]:
    port = free_port()
    proc = spawn([PY, "-m", "loadtest.floor_server", "--fanout", "--port", str(port)])
    try:
        wait_port(port, 20.0, proc)
        yield port
    finally:
        stop_pid(proc)


def publish(port: int, topic: str, data: object) -> str:
    r = httpx.post(f"http://127.0.0.1:{port}/v1/publish", json={"topic": topic, "data": data})
    assert r.status_code == 202
    msg_id: str = r.json()["id"]
    return msg_id


def test_fanout_floor_routes_a_publish_to_its_topic_only(fanout_floor: int) -> None:
    url = f"ws://127.0.0.1:{fanout_floor}/ws"
    # The `websockets` client masks with random keys: the floor must unmask.
    with connect(url) as a, connect(url) as b:
        for ws, topic in ((a, "floor.a"), (b, "floor.b")):
            ws.send(json.dumps({"op": "subscribe", "id": 1, "topic": topic}))
            reply = orjson.loads(ws.recv(timeout=5))
            assert (reply["op"], reply["topic"]) == ("subscribed", topic)
        first = publish(fanout_floor, "floor.a", {"n": 1})
        second = publish(fanout_floor, "floor.b", {"n": 2})
        assert first != second
        # Herald's wire shape (docs/protocol.md): one message per `msgs` frame here.
        got_a = orjson.loads(a.recv(timeout=5))
        got_b = orjson.loads(b.recv(timeout=5))
    assert got_a["op"] == "msgs"
    (msg_a,) = got_a["msgs"]
    assert (msg_a["topic"], msg_a["id"], msg_a["data"]) == ("floor.a", first, {"n": 1})
    assert isinstance(msg_a["ts"], int)
    # b never saw floor.a's message: its first frame is its own topic's.
    (msg_b,) = got_b["msgs"]
    assert (msg_b["topic"], msg_b["id"], msg_b["data"]) == ("floor.b", second, {"n": 2})


def test_fanout_floor_with_the_load_client_and_paced_http_publisher(fanout_floor: int) -> None:
    subs = LoadClient(fanout_floor)  # Herald's dialect, counting `"t0":` marks
    try:
        assert subs.connect(20, topics=2, probe_every=2)["open"] == 20
        out = subprocess.run(
            [PY, "-m", "loadtest.loadclient", "pub", "--kind", "http",
             "--port", str(fanout_floor), "--topics", "2", "--rate", "200", "--count", "10"],
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
        assert json.loads(out.stdout.splitlines()[-1])["sent"] == 10
        # bench.t0 and bench.t1 get 5 messages each, 10 sockets each: 100 deliveries.
        st = subs.wait_msgs(100, 10_000 * MS)
        assert (st["msgs"], st["frames"], st["other"]) == (100, 100, 0)
        lat = subs.call("latency")
        assert lat["n"] == 50  # every other socket probes
        assert 0 < lat["p50_ms"] <= lat["max_ms"]
    finally:
        subs.stop()


def test_broadcast_floor_writes_one_frame_to_every_socket() -> None:
    floor = Floor(None)
    subs = LoadClient(floor.port, "floor")
    try:
        assert subs.connect(5)["open"] == 5
        assert floor.set_size(300) == 300
        for _ in range(3):
            assert floor._call("fire") == 5
        st = subs.wait_msgs(15, 10_000 * MS)
        assert (st["msgs"], st["frames"], st["bytes"]) == (15, 15, 15 * 300)
    finally:
        subs.stop()
        floor.stop()

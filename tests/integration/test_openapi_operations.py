"""Operational answers of a real gateway: readiness, upgrade refusals, metrics, batches."""

from __future__ import annotations

import time

import httpx
import pytest
import websockets
from websockets.sync.client import connect

import wsclient
from procs import MS, HeraldServer, RedisServer, running

pytestmark = pytest.mark.integration


def test_get_ws_without_upgrade_is_426_with_a_hint(server: HeraldServer) -> None:
    r = httpx.get(server.http + "/ws")
    assert r.status_code == 426
    assert r.headers["upgrade"] == "websocket"
    error = r.json()["error"]
    assert error["code"] == "upgrade_required"
    assert "Upgrade" in error["message"] and "proxy" in error["message"]


def test_stats_and_metrics_use_the_same_names(server: HeraldServer) -> None:
    httpx.post(server.http + "/v1/publish", json={"topic": "a.b", "data": 1})
    stats = httpx.get(server.http + "/v1/stats").json()
    metrics = httpx.get(server.http + "/metrics").text
    names = {
        line.split("{")[0].split(" ")[0]
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    for key, value in stats.items():
        if isinstance(value, bool | int | float):
            assert f"herald_{key}" in names or f"herald_{key}_total" in names, key
    for key in stats["backplane"]:
        assert f"herald_backplane_{key}_total" in names, key
    assert stats["messages_published"] >= 1


def test_metrics_have_latency_histograms_and_process_metrics(server: HeraldServer) -> None:
    httpx.get(server.http + "/v1/queues/missing")
    text = httpx.get(server.http + "/metrics").text
    assert "process_resident_memory_bytes" in text
    assert "process_cpu_seconds_total" in text
    # The route template, never the raw path, labels the histogram.
    assert (
        'herald_http_request_duration_seconds_count{method="GET",'
        'route="/v1/queues/{name}",status="404"} 1.0'
    ) in text


def _flush_count(server: HeraldServer) -> float:
    for line in httpx.get(server.http + "/metrics").text.splitlines():
        if line.startswith("herald_publish_flush_seconds_count "):
            return float(line.split()[1])
    raise AssertionError("no herald_publish_flush_seconds histogram in /metrics")


async def test_publish_to_flush_histogram_counts_flushed_batches(server: HeraldServer) -> None:
    before = _flush_count(server)
    ws = await wsclient.connect(server.ws)
    await wsclient.subscribe(ws, "flush.t")
    async with httpx.AsyncClient() as c:
        r = await c.post(server.http + "/v1/publish", json={"topic": "flush.t", "data": 1})
        assert r.status_code == 202
    assert (await wsclient.recv_json(ws))["op"] == "msgs"
    await ws.close()
    assert _flush_count(server) >= before + 1
    metrics = httpx.get(server.http + "/metrics").text
    assert 'herald_publish_flush_seconds_bucket{le="+Inf"}' in metrics
    stats = httpx.get(server.http + "/v1/stats").json()["publish_flush_seconds"]
    assert stats["count"] >= before + 1 and stats["buckets"]["+Inf"] == stats["count"]


def test_topic_batch_takes_entries_and_deprecated_messages(server: HeraldServer) -> None:
    for field in ("entries", "messages"):
        r = httpx.post(
            server.http + "/v1/publish/batch",
            json={field: [{"topic": "a.b", "data": 1}, {"topic": "bad..", "data": 2}]},
        )
        assert r.status_code == 202, r.text
        results = r.json()["results"]
        assert "id" in results[0] and results[1]["error"]["code"] == "invalid_topic"
    both = httpx.post(
        server.http + "/v1/publish/batch",
        json={"entries": [{"topic": "a.b"}], "messages": [{"topic": "a.b"}]},
    )
    assert both.status_code == 400
    assert httpx.post(server.http + "/v1/publish/batch", json={}).status_code == 400


def test_json_without_content_type(server: HeraldServer) -> None:
    body = b'{"topic": "a.b", "data": 1}'
    form = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
    assert httpx.post(server.http + "/v1/publish", content=body, headers=form).status_code == 202
    for other in ({}, {"content-type": "text/plain"}, {"content-type": "application/octet-stream"}):
        assert (
            httpx.post(server.http + "/v1/publish", content=body, headers=other).status_code == 202
        )
    bad = httpx.post(server.http + "/v1/publish", content=b"topic=a.b", headers=form)
    assert bad.status_code == 400
    assert "content-type: application/json" in bad.json()["error"]["message"]


def test_backplane_down_readyz_retry_after_and_upgrade_code() -> None:
    redis = RedisServer()
    herald = HeraldServer(env={"HERALD_ENGINE": "redis", "HERALD_REDIS_URL": redis.url})
    with running(redis, herald):
        redis.kill()
        deadline = time.monotonic() + 10
        while (r := httpx.get(herald.http + "/readyz")).status_code != 503:
            assert time.monotonic() < deadline, r.text
            time.sleep(50 * MS)
        assert r.headers["retry-after"] == "1"
        assert r.json()["backplane"] is False
        with pytest.raises(websockets.InvalidStatus) as refused:
            connect(herald.ws, open_timeout=5)
        response = refused.value.response
        assert response.status_code == 503
        assert b"backplane_unavailable" in response.body
        assert b"draining" not in response.body

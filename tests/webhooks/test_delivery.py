"""Webhook delivery against a real receiver and a real `herald serve`.

Retries with the policy's backoff, client errors, refused connections and hangs,
dead-lettering, throttling, durability across SIGKILL, and publish isolation.
"""

from __future__ import annotations

import itertools
import time

import httpx
import orjson
import pytest
from helpers import drain, eventually, metric, publish, subscribe
from receiver import Receiver

from procs import HeraldServer, free_port

FAST = {"HERALD_WEBHOOK_TIMEOUT": "0.5"}


def start(servers: list[HeraldServer], env: dict[str, str] | None = None) -> HeraldServer:
    server = HeraldServer(env={**FAST, **(env or {})}).start()
    servers.append(server)
    return server


def receiver(receivers: list[Receiver], *script: int | str) -> Receiver:
    r = Receiver(script=list(script)).start()
    receivers.append(r)
    return r


def test_retries_follow_backoff_then_dead_letter(
    servers: list[HeraldServer], receivers: list[Receiver]
) -> None:
    server = start(servers)
    flaky = receiver(receivers, 500, 429, 503, 500)
    httpx.put(server.http + "/v1/queues/hooks-dlq", timeout=5)
    policy = {
        "numRetries": 3,
        "numNoDelayRetries": 1,
        "minDelayTarget": 0.3,
        "maxDelayTarget": 1.2,
        "backoffFunction": "exponential",
    }
    sub = subscribe(
        server,
        topic="orders.>",
        endpoint=flaky.url,
        delivery_policy=policy,
        dead_letter={"queue": "hooks-dlq"},
        secret="s3",
    )
    assert publish(server, "orders.1", {"n": 1}, kind="x").status_code == 202
    calls = flaky.wait_calls(4)
    # Schedule [0, 0.6, 1.2]: each retry waits at least its delay (store-held, not slept).
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert gaps[1] >= 0.6 * 0.9 and gaps[2] >= 1.2 * 0.9, gaps
    assert [c.headers["herald-attempt"] for c in calls] == ["1", "2", "3", "4"]
    assert len({c.headers["herald-message-id"] for c in calls}) == 1
    dead = eventually(lambda: drain(server, "hooks-dlq"))
    assert dead[0]["body"]["data"] == {"n": 1}
    assert dead[0]["attributes"] | {"herald_subscription": ""} == {
        "kind": "x",
        "herald_error": "HTTP 500",
        "herald_attempts": 4,
        "herald_subscription": "",
    }
    labels = {"subscription": sub["id"]}
    assert metric(server, "herald_webhook_retried_total", **labels) == 3
    assert metric(server, "herald_webhook_failed_total", **labels) == 1
    assert metric(server, "herald_webhook_dead_lettered_total", **labels) == 1
    assert len(flaky.calls) == 4  # nothing after giving up


def test_client_error_refused_and_hanging_endpoints(
    servers: list[HeraldServer], receivers: list[Receiver]
) -> None:
    server = start(servers)
    gone = receiver(receivers, 404)
    hangs = receiver(receivers, "hang")  # times out (0.5 s), then answers 200
    closed = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: connection refused
    quick = {"numRetries": 1, "minDelayTarget": 0.1, "maxDelayTarget": 0.1}
    s404 = subscribe(server, topic="a", endpoint=gone.url, delivery_policy=quick)
    shang = subscribe(server, topic="a", endpoint=hangs.url, delivery_policy=quick)
    sref = subscribe(server, topic="a", endpoint=closed, delivery_policy=quick)
    assert publish(server, "a", 1).status_code == 202
    hangs.wait_calls(2)
    eventually(lambda: metric(server, "herald_webhook_failed_total", subscription=sref["id"]))
    assert metric(server, "herald_webhook_retried_total", subscription=sref["id"]) == 1
    eventually(lambda: metric(server, "herald_webhook_delivered_total", subscription=shang["id"]))
    assert metric(server, "herald_webhook_retried_total", subscription=shang["id"]) == 1
    eventually(lambda: metric(server, "herald_webhook_failed_total", subscription=s404["id"]))
    assert len(gone.calls) == 1  # a 4xx is not retried
    assert metric(server, "herald_webhook_retried_total", subscription=s404["id"]) == 0


def test_throttle_holds_max_receives_per_second(
    servers: list[HeraldServer], receivers: list[Receiver]
) -> None:
    server = start(servers)
    sink = receiver(receivers)
    subscribe(server, topic="t", endpoint=sink.url, delivery_policy={"maxReceivesPerSecond": 5})
    r = httpx.post(
        server.http + "/v1/publish/batch",
        json={"messages": [{"topic": "t", "data": i} for i in range(11)]},
        timeout=5,
    )
    assert r.status_code == 202
    calls = sink.wait_calls(11)
    times = [c.at for c in calls]
    for t in times:  # 5 per second, evenly spaced: never 6 within (almost) a second
        assert sum(1 for u in times if t <= u < t + 0.95) <= 5
    assert sorted(orjson.loads(c.body)["data"] for c in calls) == list(range(11))


@pytest.mark.parametrize("engine", ["memory", "redis"])
def test_durable_across_sigkill_while_waiting_for_retry(
    engine: str,
    servers: list[HeraldServer],
    receivers: list[Receiver],
    request: pytest.FixtureRequest,
) -> None:
    env = {"HERALD_ENGINE": engine}
    if engine == "redis":  # the retry waits in Redis, which outlives the gateway
        env["HERALD_REDIS_URL"] = request.getfixturevalue("redis_server").url
    server = start(servers, env)
    sink = receiver(receivers, 503)  # first attempt fails, every later one succeeds
    policy = {"numRetries": 3, "minDelayTarget": 2, "maxDelayTarget": 2}
    subscribe(server, topic="orders.>", endpoint=sink.url, delivery_policy=policy)
    assert publish(server, "orders.9", {"order": 9}).status_code == 202
    sink.wait_calls(1)
    eventually(lambda: metric(server, "herald_webhook_retried_total") == 1)
    server.kill()  # SIGKILL: the retry is due in 2 s and lives only in the store
    server.start()
    calls = sink.wait_calls(2, timeout=15)
    assert orjson.loads(calls[1].body)["data"] == {"order": 9}
    assert calls[0].headers["herald-message-id"] == calls[1].headers["herald-message-id"]
    # Delivered exactly once: no call after the 2xx, even past another retry delay.
    eventually(lambda: metric(server, "herald_webhook_delivered_total") == 1)
    time.sleep(2.5)
    assert len(sink.calls) == 2


def test_subscription_api_refuses_bad_input(servers: list[HeraldServer]) -> None:
    server = start(servers)
    httpx.put(server.http + "/v1/queues/q", timeout=5)
    bad = [
        {"topic": "t"},
        {"topic": "t", "queue": "q", "endpoint": "http://x/h"},
        {"topic": "t", "endpoint": "ftp://x/h"},
        {"topic": "t", "endpoint": "not a url"},
        {"topic": "t", "endpoint": "http://x/h", "delivery_policy": {"numRetries": 1000}},
        {"topic": "t", "endpoint": "http://x/h", "delivery_policy": {"backoffFunction": "x"}},
        {"topic": "t", "endpoint": "http://x/h", "secret": ""},
        {"topic": "t", "queue": "q", "secret": "s"},
        {"topic": "t..", "endpoint": "http://x/h"},
        {"topic": "t", "endpoint": "http://x/h", "dead_letter": {"queue": "d.fifo"}},
    ]
    for body in bad:
        r = httpx.post(server.http + "/v1/subscriptions", json=body, timeout=5)
        assert r.status_code == 400, (body, r.text)
    r = httpx.post(
        server.http + "/v1/subscriptions",
        timeout=5,
        json={"topic": "t", "endpoint": "http://x/h", "dead_letter": {"queue": "no"}},
    )
    assert r.status_code == 404
    assert httpx.get(server.http + "/v1/subscriptions", timeout=5).json()["subscriptions"] == []


def test_full_subscriber_queue_does_not_fail_the_publish(
    servers: list[HeraldServer], receivers: list[Receiver]
) -> None:
    server = start(servers)
    sink = receiver(receivers)
    httpx.put(server.http + "/v1/queues/tiny", json={"max_depth": 1}, timeout=5)
    httpx.put(server.http + "/v1/queues/roomy", timeout=5)
    subscribe(server, topic="o.>", queue="tiny")
    subscribe(server, topic="o.>", queue="roomy")
    subscribe(server, topic="o.>", endpoint=sink.url)
    for i in range(3):
        r = publish(server, "o.x", i, id=f"order-{i}")
        assert r.status_code == 202, r.text  # was 503 queue_full after partial delivery
    assert [m["body"]["data"] for m in drain(server, "roomy")] == [0, 1, 2]
    assert [m["body"]["data"] for m in drain(server, "tiny")] == [0]
    calls = sink.wait_calls(3)
    assert sorted(orjson.loads(c.body)["data"] for c in calls) == [0, 1, 2]
    assert metric(server, "herald_fanout_refused_total", queue="tiny") == 2
    time.sleep(0.3)
    assert len(sink.calls) == 3  # exactly once each

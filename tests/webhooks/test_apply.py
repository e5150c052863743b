"""`herald apply` against a real gateway, and the order fan-out of examples/resources.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import orjson
from helpers import drain, eventually, metric, publish, subscribe
from receiver import Receiver

from procs import ROOT, HeraldServer

EXAMPLE = ROOT / "examples" / "resources.yaml"


def herald_apply(server: HeraldServer, *args: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "apply",
            "-f",
            str(EXAMPLE),
            "--url",
            server.http,
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def state(server: HeraldServer) -> tuple[list[str], list[str]]:
    queues = httpx.get(server.http + "/v1/queues", timeout=5).json()["queues"]
    subs = httpx.get(server.http + "/v1/subscriptions", timeout=5).json()["subscriptions"]
    return sorted(q["name"] for q in queues), sorted(orjson.dumps(s).decode() for s in subs)


def test_apply_idempotent_dry_run_and_prune(
    servers: list[HeraldServer], receivers: list[Receiver]
) -> None:
    server = HeraldServer().start()
    servers.append(server)
    env = {"ANALYTICS_WEBHOOK_URL": "http://127.0.0.1:9/hook", "ANALYTICS_WEBHOOK_SECRET": "k1"}
    dry = herald_apply(server, "--dry-run", env=env)
    assert "+ queue orders-fraud" in dry and "+ subscription orders.> -> orders-fraud" in dry
    assert "~ history rules" in dry
    assert state(server) == ([], [])  # dry run changed nothing
    publish(server, "orders.a", 0)
    first = herald_apply(server, env=env)
    assert "changed 10 resource(s)" in first
    rules = httpx.get(server.http + "/v1/history-rules", timeout=5).json()["rules"]
    assert rules == [{"pattern": "orders.>", "size": 1000, "ttl": None}]

    def kept() -> list[object]:
        publish(server, "orders.a", 1)
        page = httpx.get(server.http + "/v1/topics/orders.a/history", timeout=5).json()
        return [m["data"] for m in page["messages"]]

    assert eventually(kept)[0] == 1  # the gateway follows the applied rule (not message 0)
    applied = state(server)
    fraud = httpx.get(server.http + "/v1/queues/orders-fraud", timeout=5).json()
    assert fraud["dead_letter"] == {"queue": "orders-fraud-dlq", "max_receive_count": 5}
    assert fraud["visibility_timeout"] == 60
    assert herald_apply(server, env=env).strip() == "no changes"
    assert state(server) == applied
    # Drift is seen and repaired; a new secret updates the webhook in place.
    httpx.put(server.http + "/v1/queues/orders-fraud", json={"visibility_timeout": 5}, timeout=5)
    env["ANALYTICS_WEBHOOK_SECRET"] = "k2"
    out = herald_apply(server, env=env)
    assert "~ queue orders-fraud: visibility_timeout" in out
    assert "~ subscription orders.> -> http://127.0.0.1:9/hook: secret" in out
    # Undeclared resources: only --prune removes them, and only them.
    httpx.put(server.http + "/v1/queues/extra", timeout=5)
    subscribe(server, topic="misc.>", queue="extra")
    assert "- queue extra" in herald_apply(server, "--prune", "--dry-run", env=env)
    assert "extra" in state(server)[0] and herald_apply(server, env=env).strip() == "no changes"
    pruned = herald_apply(server, "--prune", env=env)
    assert "- queue extra" in pruned and "- subscription misc.> -> extra" in pruned
    names, subs = state(server)
    assert names == applied[0] and len(subs) == 4


def test_example_order_fanout_end_to_end(
    servers: list[HeraldServer], receivers: list[Receiver]
) -> None:
    sink = Receiver(script=[503]).start()  # the webhook's first attempt fails: retried
    receivers.append(sink)
    server = HeraldServer(
        env={
            "HERALD_RESOURCES": str(EXAMPLE),
            "ANALYTICS_WEBHOOK_URL": sink.url,
            "ANALYTICS_WEBHOOK_SECRET": "analytics-secret",
        }
    ).start()
    servers.append(server)
    orders = [
        ("o1", {"eventType": "order.created", "shippingRequired": True, "total": 1500}),
        ("o2", {"eventType": "order.created", "shippingRequired": False, "total": 50}),
        ("o3", {"eventType": "order.cancelled", "total": 5000}),
        ("o4", {"eventType": "order.shipped", "shippingRequired": True}),
        ("o5", {"eventType": "order.created", "shippingRequired": True, "total": 1000}),
    ]
    for order_id, attrs in orders:
        r = publish(server, f"orders.eu.{order_id}", {"order": order_id}, **attrs)
        assert r.status_code == 202, r.text
    got = {
        q: [m["body"]["data"]["order"] for m in drain(server, q)]
        for q in ("orders-inventory", "orders-shipping", "orders-fraud")
    }
    assert got == {
        "orders-inventory": ["o1", "o2", "o3", "o5"],
        "orders-shipping": ["o1", "o5"],
        "orders-fraud": ["o1", "o5"],  # numeric >= 1000
    }
    # The webhook: created orders only, each delivered once; the first attempt's 503 is
    # retried at once (the example's policy has one no-delay retry).
    calls = sink.wait_calls(4)
    time.sleep(0.5)
    ids = [c.headers["herald-message-id"] for c in calls]
    assert ids.count(ids[0]) == 2 and len(set(ids)) == 3  # the failed one twice, others once
    delivered = sorted({orjson.loads(c.body)["data"]["order"] for c in calls})
    assert delivered == ["o1", "o2", "o5"]
    assert len(sink.calls) == 4
    assert metric(server, "herald_webhook_delivered_total") == 3
    assert metric(server, "herald_webhook_retried_total") == 1
    history = httpx.get(server.http + "/v1/topics/orders.eu.o1/history", timeout=5).json()
    assert [m["data"] for m in history["messages"]] == [{"order": "o1"}]  # history rule

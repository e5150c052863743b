"""Small helpers of the webhook acceptance tests."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from procs import HeraldServer


def metric(server: HeraldServer, name: str, **labels: str) -> float:
    """The value of one sample on /metrics (0 when absent)."""
    text = httpx.get(server.http + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def drain(server: HeraldServer, queue: str) -> list[dict[str, Any]]:
    """Receive and ack everything visible on `queue`."""
    out: list[dict[str, Any]] = []
    while True:
        r = httpx.post(f"{server.http}/v1/queues/{queue}/receive", json={"max": 100}, timeout=5)
        msgs = r.json()["messages"]
        if not msgs:
            return out
        httpx.post(
            f"{server.http}/v1/queues/{queue}/ack",
            json={"receipts": [m["receipt"] for m in msgs]},
            timeout=5,
        )
        out += msgs


def subscribe(server: HeraldServer, **body: Any) -> dict[str, Any]:
    r = httpx.post(server.http + "/v1/subscriptions", json=body, timeout=5)
    assert r.status_code == 201, r.text
    return dict(r.json())


def publish(server: HeraldServer, topic: str, data: Any, **attributes: Any) -> httpx.Response:
    return httpx.post(
        server.http + "/v1/publish",
        json={"topic": topic, "data": data, "attributes": attributes},
        timeout=5,
    )

"""The documented verification snippet, run against real signed requests; confirmation."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from helpers import eventually, publish, subscribe
from receiver import Receiver

from procs import ROOT, HeraldServer


def documented_verify() -> Callable[..., bool]:
    text = (Path(ROOT) / "docs" / "webhooks.md").read_text()
    code = re.search(r"<!-- verify-snippet -->\n```python\n(.*?)```", text, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)
    verify: Callable[..., bool] = namespace["verify"]
    return verify


def test_signature_verifies_with_the_documented_snippet(
    server: HeraldServer, sink: Receiver
) -> None:
    subscribe(server, topic="t", endpoint=sink.url, secret="right-secret", raw=True)
    publish(server, "t", {"x": 1})
    (call,) = sink.wait_calls(1)
    assert orjson.loads(call.body) == {"x": 1}  # raw: data only
    verify = documented_verify()
    assert verify("right-secret", call.headers, call.body)
    assert not verify("wrong-secret", call.headers, call.body)
    assert not verify("right-secret", call.headers, call.body + b" ")
    stale = call.headers | {"herald-timestamp": str(int(call.headers["herald-timestamp"]) - 900)}
    assert not verify("right-secret", stale, call.body)


def test_confirmation_gates_delivery(server: HeraldServer, sink: Receiver) -> None:
    sub = subscribe(server, topic="t", endpoint=sink.url, confirm=True, secret="k")
    assert sub["status"] == "pending_confirmation"
    (hello,) = sink.wait_calls(1)
    body = orjson.loads(hello.body)
    assert hello.headers["herald-message-type"] == "SubscriptionConfirmation"
    assert documented_verify()("k", hello.headers, hello.body)
    publish(server, "t", "before")  # not delivered: pending
    bad = httpx.post(f"{server.http}/v1/subscriptions/{sub['id']}/confirm?token=nope", timeout=5)
    assert bad.status_code == 400
    r = httpx.get(body["confirm_url"], timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    publish(server, "t", "after")
    calls = sink.wait_calls(2)
    eventually(lambda: len(sink.calls) >= 2)
    assert orjson.loads(calls[1].body)["data"] == "after"
    assert len(sink.calls) == 2

"""Deployment artefacts: k8s manifests, Dockerfile and the example queue worker.

`scripts/k8s-check.sh` renders every kustomize overlay and validates it offline
(Kubernetes schemas, cross-object wiring, checkov, hadolint). Its first run
installs pinned tools into ~/.cache/herald-k8s-tools (about a minute); later
runs take seconds.

The worker tests drive examples/worker.py against an in-memory fake of Herald's
HTTP queue API (httpx.MockTransport): no server, no sleeps beyond a few ms.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# k8s-check.sh
# --------------------------------------------------------------------------


@pytest.mark.timeout(900)  # first run installs checkov & co. (~1-2 min on 2 cores)
def test_k8s_check_script_passes() -> None:
    env = {k: v for k, v in os.environ.items() if k != "K8S_CHECK_KEEP"}
    env.setdefault("PYTHON", sys.executable)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "k8s-check.sh")],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert proc.returncode == 0, f"k8s-check failed:\n{proc.stdout}\n{proc.stderr}"
    assert "k8s-check passed" in proc.stdout
    for overlay in ("dev", "prod"):
        assert f"k8s/overlays/{overlay} ->" in proc.stdout


# --------------------------------------------------------------------------
# examples/worker.py
# --------------------------------------------------------------------------


def load_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "herald_example_worker", ROOT / "examples" / "worker.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = load_worker()


class FakeQueueAPI:
    """Just enough of POST /v1/queues/{name}/{receive,ack,nack} (docs/queues.md)."""

    def __init__(self, queue: str, bodies: list[Any]) -> None:
        self.queue = queue
        self.visible = [
            {"id": f"m{i}", "body": b, "attributes": {}, "receive_count": 0}
            for i, b in enumerate(bodies)
        ]
        self.acked: list[str] = []
        self.nacked: list[dict[str, Any]] = []
        self.receives: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []
        self.empty = asyncio.Event()
        self.fail_next = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        prefix = f"/v1/queues/{self.queue}/"
        assert request.method == "POST" and request.url.path.startswith(prefix)
        action = request.url.path.removeprefix(prefix)
        body = json.loads(request.content)
        if action == "receive":
            self.receives.append(body)
            if self.fail_next:
                self.fail_next -= 1
                return httpx.Response(503, json={"error": {"code": "unavailable", "message": "x"}})
            batch, self.visible = self.visible[: body["max"]], self.visible[body["max"] :]
            if not batch:
                self.empty.set()
            for m in batch:
                m["receive_count"] += 1
                m["receipt"] = f"r-{m['id']}-{m['receive_count']}"
            return httpx.Response(200, json={"messages": batch})
        if action == "ack":
            self.acked.extend(body["receipts"])
            return httpx.Response(200, json={"results": [{"ok": True} for _ in body["receipts"]]})
        if action == "nack":
            self.nacked.append(body)
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": action}})


async def run_until_empty(w: Any, api: FakeQueueAPI) -> None:
    stop = asyncio.Event()

    async def stopper() -> None:
        await api.empty.wait()
        stop.set()

    task = asyncio.create_task(stopper())
    await asyncio.wait_for(w.run(stop), timeout=5)
    await task


async def test_worker_acks_handled_jobs_and_nacks_failures(tmp_path: Path) -> None:
    api = FakeQueueAPI("jobs", [{"n": 1}, {"n": 2}, {"n": 3}])
    seen: list[Any] = []

    async def handler(message: dict[str, Any]) -> None:
        seen.append(message["body"])
        if message["body"] == {"n": 2}:
            raise RuntimeError("boom")

    alive = tmp_path / "alive"
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(api), base_url="http://herald"
    ) as client:
        w = worker.Worker(client, "jobs", handler, batch=2, wait=20, alive_file=alive)
        await run_until_empty(w, api)

    assert seen == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert api.receives[0] == {"max": 2, "wait": 20}
    assert api.acked == ["r-m0-1", "r-m2-1"]
    assert api.nacked == [{"receipt": "r-m1-1", "delay": 10}]
    assert (w.handled, w.failed) == (2, 1)
    assert alive.exists()


async def test_worker_retries_receive_errors_with_backoff() -> None:
    api = FakeQueueAPI("jobs", [{"n": 1}])
    api.fail_next = 2
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(api), base_url="http://herald"
    ) as client:
        w = worker.Worker(client, "jobs", worker.handle, max_backoff=0.01)
        await run_until_empty(w, api)
    assert len(api.receives) >= 4  # 2 failures, the job, then the empty poll
    assert api.acked == ["r-m0-1"]


async def test_worker_stops_during_a_long_poll() -> None:
    polling = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        polling.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(hang), base_url="http://herald"
    ) as client:
        w = worker.Worker(client, "jobs")
        stop = asyncio.Event()
        task = asyncio.create_task(w.run(stop))
        await asyncio.wait_for(polling.wait(), timeout=5)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert (w.handled, w.failed) == (0, 0)


async def test_worker_client_from_env_sets_base_url_key_and_poll_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HERALD_URL", "http://herald.test:8080")
    monkeypatch.setenv("HERALD_API_KEY", "k-123")
    monkeypatch.setenv("WORKER_WAIT", "20")
    async with worker.client_from_env() as client:
        assert str(client.base_url) == "http://herald.test:8080"
        assert client.headers["authorization"] == "Bearer k-123"
        assert client.timeout.read is not None and client.timeout.read > 20

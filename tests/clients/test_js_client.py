"""Issue 12 scenarios for the JS client (clients/js/test/scenarios.js), in Node with
`node --test` and in headless Chromium through Playwright, against the same real
gateways as the Python client's scenarios."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lab import Control, Lab
from procs import ROOT

pytestmark = pytest.mark.integration

SCENARIOS = [
    "wildcard_filter",
    "drain",
    "crash",
    "liveness",
    "unrecovered",
    "token_refresh",
    "queue_ack_nack",
    "consumer_killed",
    "offline_bounded",
    "close_1008_never_loops",
    "unauthorized_4401",
]
CHROMIUM = "/usr/bin/chromium"


def node_binary() -> str:
    path = shutil.which("node")
    if path is None:
        # Loud, never a skip: `make test` installs Node where it is missing.
        raise RuntimeError("node is not installed; run `make test` (it installs it)")
    return path


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_node(control: Control, scenario: str) -> None:
    env = {**os.environ, "HERALD_CTL": control.url, "HERALD_SCENARIO": scenario}
    out = subprocess.run(
        [node_binary(), "--experimental-websocket", "--test", "clients/js/test/node.test.js"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "# pass 1" in out.stdout, out.stdout


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise RuntimeError("chromium is not installed; run `make test` (it installs it)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chromium(control: Control, browser: Any, scenario: str) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{control.url}/page.html?scenario={scenario}")
        page.wait_for_function("window.__result !== undefined", timeout=90_000)
        result = page.evaluate("window.__result")
    finally:
        page.close()
    assert result["ok"], result.get("error")
    assert not errors, errors


def test_gateway_serves_herald_js(lab: Lab) -> None:
    env = lab.setup("basic")
    r = httpx.get(f"{env['http'][0]}/client/herald.js", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.content == (ROOT / "clients" / "js" / "herald.js").read_bytes()

"""Browsers from other origins: CORS on the HTTP API and the WebSocket `Origin` check.

A real headless Chromium (Debian's `chromium`, driven by Playwright) loads a page from
an allowed and from a foreign origin and calls a real `herald serve` from it. The page
comes from a small loopback HTTP server reached under two names, `127.0.0.1` (allowed)
and `localhost` (foreign): two origins, both in the loopback address space, which
Chromium's local-network rules require for calls to a loopback gateway. A plain
WebSocket client then sends the `Origin` headers a browser page would.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import websockets
from playwright.sync_api import Browser, sync_playwright
from websockets.sync.client import connect

from procs import HeraldServer, free_port, herald_fixture

pytestmark = pytest.mark.integration

KEY = "browser-test-key"
PAGE_PORT = free_port()
ALLOWED = f"http://127.0.0.1:{PAGE_PORT}"
FOREIGN = f"http://localhost:{PAGE_PORT}"

# Runs in the page: one CORS publish (with an Authorization header, so preflighted)
# and one WebSocket subscribe; reports what the page could see.
PAGE_SCRIPT = """async ([http, ws, key]) => {
  const out = {};
  try {
    const r = await fetch(http + "/v1/publish", {
      method: "POST",
      headers: {"content-type": "application/json", "authorization": "Bearer " + key},
      body: JSON.stringify({topic: "game.1.score", data: 1}),
    });
    out.status = r.status;
    out.body = await r.json();
  } catch (e) { out.fetchError = String(e); }
  out.ws = await new Promise((resolve) => {
    const sock = new WebSocket(ws + "?token=" + key);
    sock.onopen = () => sock.send(JSON.stringify({op: "subscribe", id: 1, topic: "game.>"}));
    sock.onmessage = (e) => { resolve(JSON.parse(e.data).op); sock.close(); };
    sock.onclose = (e) => resolve("closed " + e.code);
  });
  return out;
}"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>app</title>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_server() -> Iterator[None]:
    httpd = ThreadingHTTPServer(("127.0.0.1", PAGE_PORT), _Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


server = herald_fixture({"HERALD_API_KEYS": KEY, "HERALD_ALLOWED_ORIGINS": ALLOWED})


@pytest.fixture(scope="module")
def browser(page_server: None) -> Iterator[Browser]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()


def _visit(browser: Browser, origin: str, server: HeraldServer) -> dict[str, Any]:
    page = browser.new_page()
    try:
        page.goto(origin + "/")
        result: dict[str, Any] = page.evaluate(PAGE_SCRIPT, [server.http, server.ws, KEY])
        return result
    finally:
        page.close()


def test_allowed_origin_can_publish_and_subscribe(browser: Browser, server: HeraldServer) -> None:
    out = _visit(browser, ALLOWED, server)
    assert out.get("status") == 202, out
    assert "id" in out["body"]
    assert out["ws"] == "subscribed", out


def test_foreign_origin_is_refused_by_the_browser_and_the_upgrade(
    browser: Browser, server: HeraldServer
) -> None:
    out = _visit(browser, FOREIGN, server)
    assert "fetchError" in out, out  # no CORS headers for this origin: the page cannot read
    assert out["ws"].startswith("closed"), out  # the upgrade answered 403


def _preflight(server: HeraldServer, origin: str) -> Any:
    import httpx

    return httpx.options(
        server.http + "/v1/publish",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_preflight_credentials_and_exposed_headers(server: HeraldServer) -> None:
    ok = _preflight(server, ALLOWED)
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert _preflight(server, FOREIGN).headers.get("access-control-allow-origin") is None
    import httpx

    r = httpx.get(server.http + "/v1/stats", headers={"Origin": ALLOWED})
    assert "retry-after" in r.headers["access-control-expose-headers"].lower()


# Playwright's sync API keeps an event loop running in this thread: the plain clients
# use websockets' sync client.
def _upgrade(server: HeraldServer, origin: str | None) -> int:
    headers = {"Origin": origin} if origin else {}
    try:
        with connect(server.ws + f"?token={KEY}", additional_headers=headers, open_timeout=5) as ws:
            ws.send(json.dumps({"op": "ping", "id": 1}))
            assert json.loads(ws.recv(timeout=5))["op"] == "pong"
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


def test_plain_client_with_foreign_origin_gets_403(server: HeraldServer) -> None:
    assert _upgrade(server, FOREIGN) == 403
    assert _upgrade(server, ALLOWED) == 101
    assert _upgrade(server, None) == 101  # not a browser: nothing to hijack
    same = f"http://127.0.0.1:{server.port}"
    assert _upgrade(server, same) == 101  # a page served by the gateway itself


def test_dev_mode_allows_every_origin() -> None:
    dev = HeraldServer().start()
    try:
        with connect(dev.ws, additional_headers={"Origin": FOREIGN}, open_timeout=5) as ws:
            ws.send(json.dumps({"op": "ping", "id": 1}))
            assert json.loads(ws.recv(timeout=5))["op"] == "pong"
    finally:
        dev.stop()

"""The OpenAPI document tells the truth, /docs works offline, docs/http-api.md is current.

The status test does not trust a hand-written list: it sends hostile requests to every
route of a real `herald serve` (no credentials, a bad one, a non-admin JWT, a bad or
oversized body, a missing resource) and checks each answer's status is documented.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from procs import ROOT, HeraldServer, herald_fixture

pytestmark = pytest.mark.integration

SECRET = "openapi-test-secret-of-at-least-32-bytes"
KEY = "openapi-test-key"


server = herald_fixture({"HERALD_API_KEYS": KEY, "HERALD_JWT_SECRET": SECRET})


@pytest.fixture(scope="module")
def spec(server: HeraldServer) -> dict[str, Any]:
    return httpx.get(server.http + "/openapi.json").json()


def _jwt(**claims: Any) -> str:
    return jwt.encode(
        {"sub": "u", "exp": int(time.time()) + 600, **claims}, SECRET, algorithm="HS256"
    )


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_no_422_and_one_error_model(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for method, path, op in _operations(spec):
        assert "422" not in op["responses"], (method, path)
        for status, resp in op["responses"].items():
            if status.startswith(("4", "5")) and path != "/readyz":
                ref = resp["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (method, path, status)


def test_schema_names_are_clean(spec: dict[str, Any]) -> None:
    for name in spec["components"]["schemas"]:
        assert re.fullmatch(r"[A-Z][A-Za-z]+", name), name
    stats = spec["paths"]["/v1/stats"]["get"]["responses"]["200"]["content"]["application/json"]
    assert stats["schema"] == {"$ref": "#/components/schemas/StatsOut"}


_OPEN = ("/v1/stats", "/v1/subscriptions/{sub_id}/confirm")


def test_security_schemes_declared(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"]["scheme"] == "bearer"
    assert schemes["BearerJWT"]["bearerFormat"] == "JWT"
    for method, path, op in _operations(spec):
        # The confirmation link's token is its credential (as SNS's SubscribeURL).
        if path.startswith("/v1/") and path not in _OPEN:
            assert op["security"] == [{"ApiKey": []}, {"BearerJWT": []}], (method, path)
            assert {"401", "403"} <= set(op["responses"]), (method, path)


def _probes(method: str, path: str, op: dict[str, Any]) -> Iterator[dict[str, Any]]:
    url = (
        path.replace("{name}", "no-such-queue")
        .replace("{topic}", "game.1")
        .replace("{sub_id}", "no-such-sub")
    )
    admin = {"Authorization": f"Bearer {KEY}"}
    yield {"method": method, "url": url}
    yield {"method": method, "url": url, "headers": {"Authorization": "Bearer wrong"}}
    yield {"method": method, "url": url, "headers": {"Authorization": f"Bearer {_jwt()}"}}
    yield {"method": method, "url": url, "headers": admin}
    if "requestBody" in op:
        yield {"method": method, "url": url, "headers": admin, "content": b"{not json"}
        yield {"method": method, "url": url, "headers": admin, "json": {"unexpected": [1]}}
        yield {"method": method, "url": url, "headers": admin, "content": b"x" * (40 << 20)}
    if "topic" in path:
        yield {"method": method, "url": url.replace("game.1", "bad..topic"), "headers": admin}


def test_every_status_a_route_answers_is_documented(
    server: HeraldServer, spec: dict[str, Any]
) -> None:
    undocumented = []
    seen: set[int] = set()
    with httpx.Client(base_url=server.http, timeout=10) as client:
        for method, path, op in _operations(spec):
            for probe in _probes(method, path, op):
                status = client.request(**probe).status_code
                seen.add(status)
                if str(status) not in op["responses"]:
                    undocumented.append((method, path, status))
    assert not undocumented, undocumented
    # The probes did reach the error paths they aim at.
    assert {400, 401, 403, 404, 413} <= seen, seen


def _asset_urls(html: str) -> list[str]:
    urls: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            urls.extend(v for k, v in attrs if k in ("src", "href") and v)

    Parser().feed(html)
    return urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_no_external_host(server: HeraldServer, page: str) -> None:
    r = httpx.get(server.http + page)
    assert r.status_code == 200
    assert not re.search(r"https?://", r.text), re.findall(r"https?://[^\s'\"]+", r.text)
    assets = _asset_urls(r.text)
    assert assets
    for url in assets:
        assert not urlsplit(url).netloc, url
        assert httpx.get(server.http + url).status_code == 200, url


def test_http_api_doc_is_current() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/gen_http_api.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr

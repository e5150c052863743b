"""The WebSocket `Origin` check (gateway/origins.py) and its default (shared/config.py)."""

from __future__ import annotations

import pytest

from gateway.origins import origin_allowed
from shared.config import Settings

HOST = {"host": "herald.example:8080"}


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        (None, [], True),  # not a browser
        ("https://app.example", ["https://app.example"], True),
        ("https://APP.example/", ["https://app.example"], True),  # case, trailing slash
        ("https://evil.example", ["https://app.example"], False),
        ("https://app.example.evil.example", ["https://app.example"], False),
        ("http://app.example", ["https://app.example"], False),  # scheme matters
        ("null", ["https://app.example"], False),  # sandboxed frame, file://
        ("https://evil.example", ["*"], True),
        ("http://herald.example:8080", [], True),  # same origin
        ("http://herald.example:9090", [], False),  # another port is another origin
    ],
)
def test_origin_allowed(origin: str | None, allowed: list[str], ok: bool) -> None:
    headers = dict(HOST)
    if origin is not None:
        headers["origin"] = origin
    assert origin_allowed(headers, allowed) is ok


def test_default_is_star_in_dev_mode_and_same_origin_with_auth() -> None:
    assert Settings().origins == ["*"]
    assert Settings(api_keys="k").origins == []
    assert Settings(
        api_keys="k", allowed_origins="https://a.example/, https://b.example"
    ).origins == [
        "https://a.example",
        "https://b.example",
    ]

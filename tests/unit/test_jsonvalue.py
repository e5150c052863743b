"""shared.jsonvalue: what Herald accepts as a JSON value."""

from __future__ import annotations

import json

import orjson
import pytest

from shared.errors import InvalidRequest
from shared.jsonvalue import MAX_DEPTH, check_fields, check_value, json_safe, parse_http_body


def deep(n: int) -> object:
    v: object = 1
    for _ in range(n):
        v = [v]
    return v


@pytest.mark.parametrize(
    "value",
    [
        "\ud800",
        {"\udc00": 1},
        [float("nan")],
        float("inf"),
        -(2**63) - 1,
        2**64,
        deep(65),
        b"x",
        (1,),
        {1: 2},
    ],
)
def test_refused(value: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_value(value, "data")
    assert "'data'" in info.value.message


@pytest.mark.parametrize(
    "value", [None, True, 0, -(2**63), 2**64 - 1, 1.5, "é😀", {"k": [1, "x", None]}, deep(64)]
)
def test_accepted_values_encode(value: object) -> None:
    check_value(value, "data")
    orjson.dumps({"messages": [{"body": {"data": value}}]})  # deliverable once wrapped


def test_deepest_accepted_value_survives_every_wrapping() -> None:
    value = deep(MAX_DEPTH)
    check_value(value, "data")
    wrapped: object = value
    for _ in range(8):  # envelope, queue payload, receive reply...
        wrapped = {"w": wrapped}
    assert orjson.loads(orjson.dumps(wrapped))


def test_check_fields_names_the_field() -> None:
    with pytest.raises(InvalidRequest, match="'body'"):
        check_fields({"topic": "a", "body": float("nan")})


def test_parse_http_body_leaves_batch_entries_to_the_entry_check() -> None:
    raw = b'{"entries":[{"body":"\\ud800"}],"x":1}'
    assert parse_http_body(raw, ("entries",))["x"] == 1
    with pytest.raises(InvalidRequest):
        parse_http_body(raw)
    with pytest.raises(InvalidRequest, match="nested"):
        parse_http_body(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InvalidRequest):
        parse_http_body(b"1" * 5000)  # more digits than Python converts
    with pytest.raises(json.JSONDecodeError):
        parse_http_body(b"{")


def test_json_safe_makes_anything_encodable() -> None:
    safe = json_safe({"a\ud800": ["x\udc00", float("nan"), 1, None, True, (1, 2), b"x"]})
    assert orjson.loads(orjson.dumps(safe)) == {"a?": ["x?", "nan", 1, None, True, [1, 2], "b'x'"]}

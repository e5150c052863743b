"""Table-driven tests for shared/filters.py (docs/protocol.md Filters, SNS-style filter policies)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.errors import InvalidFilter
from shared.filters import (
    MAX_COMBINATIONS,
    MAX_KEYS,
    MAX_OR_DEPTH,
    FilterPolicy,
    compile_filter,
)

P = pytest.param

# (policy, attributes, expected)
MATCH_CASES = [
    # --- match-all
    P(None, {}, True, id="none-empty"),
    P(None, {"a": 1}, True, id="none-any"),
    P({}, {"a": "x"}, True, id="empty-any"),
    # --- exact strings
    P({"gameId": "12345"}, {"gameId": "12345"}, True, id="str-scalar-shorthand"),
    P({"gameId": ["12345"]}, {"gameId": "12345"}, True, id="str-list"),
    P({"gameId": ["1", "2"]}, {"gameId": "2"}, True, id="str-any-of"),
    P({"gameId": ["1", "2"]}, {"gameId": "3"}, False, id="str-not-listed"),
    P({"gameId": ["1"]}, {}, False, id="str-missing-key"),
    P({"gameId": ["1"]}, {"gameId": "1", "other": 9}, True, id="str-extra-keys-ignored"),
    P({"type": ["Goal"]}, {"type": "goal"}, False, id="str-case-sensitive"),
    P({"gameId": ["5"]}, {"gameId": 5}, False, id="str-vs-number"),
    P({"flag": ["true"]}, {"flag": True}, False, id="str-vs-bool"),
    P({"gameId": ["1"]}, {"gameId": None}, False, id="str-vs-null"),
    # --- exact numbers
    P({"n": [5]}, {"n": 5}, True, id="num-int"),
    P({"n": [5]}, {"n": 5.0}, True, id="num-int-vs-float"),
    P({"n": [5.0]}, {"n": 5}, True, id="num-float-vs-int"),
    P({"n": [2.5]}, {"n": 2.5}, True, id="num-float"),
    P({"n": [-1]}, {"n": -1}, True, id="num-negative"),
    P({"n": [5]}, {"n": 6}, False, id="num-different"),
    P({"n": [5]}, {"n": "5"}, False, id="num-vs-string"),
    P({"n": [1]}, {"n": True}, False, id="num-1-vs-true"),
    P({"n": [0]}, {"n": False}, False, id="num-0-vs-false"),
    # --- booleans
    P({"vip": [True]}, {"vip": True}, True, id="bool-true"),
    P({"vip": True}, {"vip": True}, True, id="bool-scalar-shorthand"),
    P({"vip": [False]}, {"vip": False}, True, id="bool-false"),
    P({"vip": [True]}, {"vip": False}, False, id="bool-mismatch"),
    P({"vip": [True]}, {"vip": 1}, False, id="bool-vs-1"),
    P({"vip": [False]}, {"vip": 0}, False, id="bool-vs-0"),
    P({"vip": [True]}, {"vip": "true"}, False, id="bool-vs-string"),
    # --- mixed exact list
    P({"x": ["a", 1, True]}, {"x": "a"}, True, id="mixed-str"),
    P({"x": ["a", 1, True]}, {"x": 1.0}, True, id="mixed-num"),
    P({"x": ["a", 1, True]}, {"x": True}, True, id="mixed-bool"),
    P({"x": ["a", 1, True]}, {"x": "1"}, False, id="mixed-str-1"),
    P({"x": ["a", 1]}, {"x": True}, False, id="mixed-true-not-1"),
    # --- prefix / suffix
    P({"type": [{"prefix": "order."}]}, {"type": "order.created"}, True, id="prefix-hit"),
    P({"type": [{"prefix": "order."}]}, {"type": "orders"}, False, id="prefix-miss"),
    P({"type": [{"prefix": "1"}]}, {"type": 12}, False, id="prefix-vs-number"),
    P({"type": [{"prefix": "order."}]}, {}, False, id="prefix-missing"),
    P({"type": [{"suffix": ".created"}]}, {"type": "order.created"}, True, id="suffix-hit"),
    P({"type": [{"suffix": ".created"}]}, {"type": "order.deleted"}, False, id="suffix-miss"),
    P({"type": [{"suffix": "2"}]}, {"type": 12}, False, id="suffix-vs-number"),
    P(
        {"type": [{"prefix": "a"}, {"suffix": "z"}, "mid"]},
        {"type": "xyz"},
        True,
        id="prefix-suffix-exact-or",
    ),
    P(
        {"type": [{"prefix": "a"}, {"suffix": "z"}, "mid"]},
        {"type": "mid"},
        True,
        id="prefix-suffix-exact-or-exact",
    ),
    P(
        {"type": [{"prefix": "a"}, {"suffix": "z"}, "mid"]},
        {"type": "xyy"},
        False,
        id="prefix-suffix-exact-or-miss",
    ),
    # --- equals-ignore-case
    P({"t": [{"equals-ignore-case": "Goal"}]}, {"t": "GOAL"}, True, id="eic-upper"),
    P({"t": [{"equals-ignore-case": "Goal"}]}, {"t": "goal"}, True, id="eic-lower"),
    P({"t": [{"equals-ignore-case": "Goal"}]}, {"t": "goals"}, False, id="eic-miss"),
    P({"t": [{"equals-ignore-case": "straße"}]}, {"t": "STRASSE"}, True, id="eic-casefold"),
    P({"t": [{"equals-ignore-case": "5"}]}, {"t": 5}, False, id="eic-vs-number"),
    # --- numeric, single comparisons
    P({"n": [{"numeric": ["=", 5]}]}, {"n": 5.0}, True, id="numeric-eq"),
    P({"n": [{"numeric": ["=", 301.5]}]}, {"n": 3.015e2}, True, id="numeric-eq-exp"),
    P({"n": [{"numeric": ["=", 5]}]}, {"n": 5.1}, False, id="numeric-eq-miss"),
    P({"n": [{"numeric": ["<", 0]}]}, {"n": -0.5}, True, id="numeric-lt"),
    P({"n": [{"numeric": ["<", 0]}]}, {"n": 0}, False, id="numeric-lt-boundary"),
    P({"n": [{"numeric": ["<=", 0]}]}, {"n": 0}, True, id="numeric-le-boundary"),
    P({"n": [{"numeric": ["<=", 0]}]}, {"n": 1}, False, id="numeric-le-miss"),
    P({"n": [{"numeric": [">", 10]}]}, {"n": 10}, False, id="numeric-gt-boundary"),
    P({"n": [{"numeric": [">", 10]}]}, {"n": 10.001}, True, id="numeric-gt"),
    P({"n": [{"numeric": [">=", 1000]}]}, {"n": 1000}, True, id="numeric-ge-boundary"),
    P({"n": [{"numeric": [">=", 1000]}]}, {"n": 999}, False, id="numeric-ge-miss"),
    P({"n": [{"numeric": [">=", 1]}]}, {"n": 10**30}, True, id="numeric-big-int"),
    # --- numeric ranges
    P({"n": [{"numeric": [">", 0, "<=", 150]}]}, {"n": 0}, False, id="range-low-excl"),
    P({"n": [{"numeric": [">", 0, "<=", 150]}]}, {"n": 0.1}, True, id="range-inside"),
    P({"n": [{"numeric": [">", 0, "<=", 150]}]}, {"n": 150}, True, id="range-high-incl"),
    P({"n": [{"numeric": [">", 0, "<=", 150]}]}, {"n": 150.5}, False, id="range-above"),
    P({"n": [{"numeric": [">=", 0, "<", 1]}]}, {"n": 0}, True, id="range-low-incl"),
    P({"n": [{"numeric": [">=", 0, "<", 1]}]}, {"n": 1}, False, id="range-high-excl"),
    P({"n": [{"numeric": [">", -10, "<", -5]}]}, {"n": -7}, True, id="range-negative"),
    P(
        {"n": [{"numeric": ["<", 0]}, {"numeric": [">", 100]}]},
        {"n": 50},
        False,
        id="numeric-or-miss",
    ),
    P(
        {"n": [{"numeric": ["<", 0]}, {"numeric": [">", 100]}]},
        {"n": 101},
        True,
        id="numeric-or-hit",
    ),
    # --- numeric type mismatches
    P({"n": [{"numeric": [">", 0]}]}, {"n": "5"}, False, id="numeric-vs-string"),
    P({"n": [{"numeric": [">", 0]}]}, {"n": True}, False, id="numeric-vs-bool"),
    P({"n": [{"numeric": [">", 0]}]}, {}, False, id="numeric-missing"),
    # --- anything-but
    P({"t": [{"anything-but": ["test"]}]}, {"t": "prod"}, True, id="ab-list-hit"),
    P({"t": [{"anything-but": ["test"]}]}, {"t": "test"}, False, id="ab-list-listed"),
    P({"t": [{"anything-but": ["a", "b"]}]}, {"t": "b"}, False, id="ab-list-second"),
    P({"t": [{"anything-but": "test"}]}, {"t": "test"}, False, id="ab-single-str"),
    P({"t": [{"anything-but": "test"}]}, {"t": "x"}, True, id="ab-single-str-hit"),
    P({"t": [{"anything-but": ["test"]}]}, {}, False, id="ab-missing-key"),
    P({"t": [{"anything-but": ["test"]}]}, {"t": 5}, True, id="ab-str-list-vs-number"),
    P({"t": [{"anything-but": ["test"]}]}, {"t": True}, True, id="ab-vs-bool"),
    P({"p": [{"anything-but": [100, 500]}]}, {"p": 100}, False, id="ab-num-listed"),
    P({"p": [{"anything-but": [100, 500]}]}, {"p": 100.0}, False, id="ab-num-float-listed"),
    P({"p": [{"anything-but": [100, 500]}]}, {"p": 100.1}, True, id="ab-num-hit"),
    P({"p": [{"anything-but": [100, 500]}]}, {"p": "100"}, True, id="ab-num-vs-string"),
    P({"p": [{"anything-but": 100}]}, {"p": 100}, False, id="ab-single-num"),
    P({"p": [{"anything-but": ["a", 1]}]}, {"p": 1}, False, id="ab-mixed-num"),
    P({"p": [{"anything-but": ["a", 1]}]}, {"p": "a"}, False, id="ab-mixed-str"),
    P({"t": [{"anything-but": {"prefix": "test"}}]}, {"t": "testing"}, False, id="ab-prefix"),
    P({"t": [{"anything-but": {"prefix": "test"}}]}, {"t": "prod"}, True, id="ab-prefix-hit"),
    P({"t": [{"anything-but": {"prefix": "1"}}]}, {"t": 5}, False, id="ab-prefix-vs-num"),
    P({"t": [{"anything-but": {"suffix": ".tmp"}}]}, {"t": "a.tmp"}, False, id="ab-suffix"),
    P({"t": [{"anything-but": {"suffix": ".tmp"}}]}, {"t": "a.txt"}, True, id="ab-suffix-hit"),
    P({"t": [{"anything-but": {"prefix": "x"}}]}, {}, False, id="ab-prefix-missing"),
    P(
        {"t": [{"anything-but": ["x"]}, {"exists": False}]},
        {},
        True,
        id="ab-or-absent-absent",
    ),
    P(
        {"t": [{"anything-but": ["x"]}, {"exists": False}]},
        {"t": "x"},
        False,
        id="ab-or-absent-listed",
    ),
    P(
        {"t": [{"anything-but": ["x"]}, {"exists": False}]},
        {"t": "y"},
        True,
        id="ab-or-absent-other",
    ),
    P({"t": [{"anything-but": ["x"]}, "x"]}, {"t": "x"}, True, id="ab-or-exact-listed"),
    # --- exists
    P({"vip": [{"exists": True}]}, {"vip": "x"}, True, id="exists-true-present"),
    P({"vip": [{"exists": True}]}, {"vip": False}, True, id="exists-true-false-value"),
    P({"vip": [{"exists": True}]}, {"vip": 0}, True, id="exists-true-zero"),
    P({"vip": [{"exists": True}]}, {"vip": ""}, True, id="exists-true-empty-string"),
    P({"vip": [{"exists": True}]}, {}, False, id="exists-true-absent"),
    P({"vip": [{"exists": True}]}, {"vip": None}, False, id="exists-true-null"),
    P({"vip": [{"exists": True}]}, {"vip": []}, False, id="exists-true-empty-array"),
    P({"vip": [{"exists": False}]}, {"other": 1}, True, id="exists-false-absent"),
    P({"vip": [{"exists": False}]}, {}, True, id="exists-false-no-attributes"),
    P({"vip": [{"exists": False}]}, {"vip": "x"}, False, id="exists-false-present"),
    P({"vip": [{"exists": False}]}, {"vip": None}, True, id="exists-false-null"),
    P({"vip": [{"exists": False}]}, {"vip": []}, True, id="exists-false-empty-array"),
    P({"k": [{"exists": False}, "x"]}, {}, True, id="exists-false-or-exact-absent"),
    P({"k": [{"exists": False}, "x"]}, {"k": "x"}, True, id="exists-false-or-exact-hit"),
    P({"k": [{"exists": False}, "x"]}, {"k": "y"}, False, id="exists-false-or-exact-miss"),
    P({"k": [{"exists": True}, {"exists": False}]}, {}, True, id="exists-both-absent"),
    P({"k": [{"exists": True}, {"exists": False}]}, {"k": 1}, True, id="exists-both-present"),
    # --- cidr
    P({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.0.7"}, True, id="cidr-v4-in"),
    P({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.1.7"}, False, id="cidr-v4-out"),
    P({"ip": [{"cidr": "10.0.0.9/24"}]}, {"ip": "10.0.0.200"}, True, id="cidr-host-bits"),
    P({"ip": [{"cidr": "0.0.0.0/0"}]}, {"ip": "203.0.113.5"}, True, id="cidr-v4-all"),
    P({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8::1"}, True, id="cidr-v6-in"),
    P({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db9::1"}, False, id="cidr-v6-out"),
    P({"ip": [{"cidr": "::/0"}]}, {"ip": "10.0.0.1"}, False, id="cidr-v6-net-v4-addr"),
    P({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "::a00:1"}, False, id="cidr-v4-net-v6-addr"),
    P({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "not-an-ip"}, False, id="cidr-garbage"),
    P({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "10.0.0.0/8"}, False, id="cidr-attr-is-net"),
    P({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": 167772161}, False, id="cidr-vs-number"),
    P({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "1" * 100}, False, id="cidr-long-string"),
    P(
        {"ip": [{"cidr": "10.0.0.0/8"}, {"cidr": "192.168.0.0/16"}]},
        {"ip": "192.168.4.4"},
        True,
        id="cidr-or",
    ),
    # --- AND across keys
    P({"a": ["1"], "b": [{"numeric": [">", 5]}]}, {"a": "1", "b": 6}, True, id="and-both"),
    P({"a": ["1"], "b": [{"numeric": [">", 5]}]}, {"a": "1", "b": 5}, False, id="and-one-fails"),
    P({"a": ["1"], "b": [{"numeric": [">", 5]}]}, {"a": "1"}, False, id="and-one-missing"),
    P(
        {"a": ["1"], "b": [{"prefix": "x"}], "c": [True], "d": [{"exists": False}], "e": [3]},
        {"a": "1", "b": "xy", "c": True, "e": 3.0},
        True,
        id="and-five-keys",
    ),
    # --- $or
    P({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"a": "1"}, True, id="or-first"),
    P({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"b": "2"}, True, id="or-second"),
    P({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"a": "2", "b": "1"}, False, id="or-neither"),
    P({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {}, False, id="or-empty-attrs"),
    P(
        {"c": ["x"], "$or": [{"a": ["1"]}, {"b": [{"numeric": [">", 0]}]}]},
        {"c": "x", "b": 3},
        True,
        id="or-with-outer-key",
    ),
    P(
        {"c": ["x"], "$or": [{"a": ["1"]}, {"b": [{"numeric": [">", 0]}]}]},
        {"c": "y", "a": "1"},
        False,
        id="or-outer-key-fails",
    ),
    P(
        {"$or": [{"a": ["1"], "b": ["2"]}, {"c": ["3"]}]},
        {"a": "1", "b": "3"},
        False,
        id="or-branch-is-and",
    ),
    P(
        {"$or": [{"a": ["1"]}, {"$or": [{"b": ["2"]}, {"c": ["3"]}]}]},
        {"c": "3"},
        True,
        id="or-nested",
    ),
    P(
        {"a": ["1"], "$or": [{"a": ["2"]}, {"b": ["2"]}]},
        {"a": "1"},
        False,
        id="or-same-key-anded",
    ),
    P({"$or": [{"a": [{"exists": False}]}, {"b": ["2"]}]}, {}, True, id="or-exists-false"),
    # --- array attributes
    P({"i": ["rugby", "tennis"]}, {"i": ["baseball", "rugby"]}, True, id="arr-exact-any"),
    P({"i": ["rugby", "tennis"]}, {"i": ["baseball"]}, False, id="arr-exact-none"),
    P({"i": ["rugby"]}, {"i": []}, False, id="arr-empty"),
    P({"i": ["5"]}, {"i": [5, None, True]}, False, id="arr-fast-path-non-strings"),
    P({"i": [5]}, {"i": ["5", 5.0]}, True, id="arr-num-exact"),
    P({"i": [{"prefix": "ru"}]}, {"i": ["tennis", "rugby"]}, True, id="arr-prefix"),
    P({"i": [{"numeric": [">", 100]}]}, {"i": [1, 200]}, True, id="arr-numeric-any"),
    P({"i": [{"numeric": [">", 100]}]}, {"i": [1, 2, "300"]}, False, id="arr-numeric-none"),
    P({"i": [{"anything-but": ["rugby"]}]}, {"i": ["rugby", "chess"]}, False, id="arr-ab-listed"),
    P({"i": [{"anything-but": ["rugby"]}]}, {"i": ["golf", "chess"]}, True, id="arr-ab-unlisted"),
    P({"i": [{"anything-but": [100, 500]}]}, {"i": [100, 50]}, False, id="arr-ab-num-listed"),
    P({"i": [{"anything-but": {"prefix": "r"}}]}, {"i": ["golf", "ru"]}, False, id="arr-ab-pre"),
    P({"i": [{"anything-but": {"prefix": "r"}}]}, {"i": ["golf", "x"]}, True, id="arr-ab-pre-ok"),
    P({"i": [{"anything-but": ["x"]}, "x"]}, {"i": ["x", "y"]}, True, id="arr-ab-or-exact"),
    P({"i": [{"exists": True}]}, {"i": ["x"]}, True, id="arr-exists-true"),
    P({"i": [{"exists": False}]}, {"i": ["x"]}, False, id="arr-exists-false"),
    P({"i": [{"cidr": "10.0.0.0/8"}]}, {"i": ["1.1.1.1", "10.1.1.1"]}, True, id="arr-cidr"),
    P({"i": [{"equals-ignore-case": "A"}]}, {"i": ["b", "a"]}, True, id="arr-eic"),
    P({"i": [True]}, {"i": [False, True]}, True, id="arr-bool"),
]


@pytest.mark.parametrize(("policy", "attributes", "expected"), MATCH_CASES)
def test_matches(policy: object, attributes: dict[str, Any], expected: bool) -> None:
    assert compile_filter(policy).matches(attributes) is expected


@pytest.mark.parametrize(("policy", "attributes", "expected"), MATCH_CASES)
def test_canonical_round_trip_matches_the_same(
    policy: object, attributes: dict[str, Any], expected: bool
) -> None:
    """The canonical text is itself a valid policy with the same meaning and text."""
    compiled = compile_filter(policy)
    again = compile_filter(json.loads(compiled.canonical) if compiled.canonical else None)
    assert again.canonical == compiled.canonical
    assert again.matches(attributes) is expected


def _keys(n: int) -> dict[str, list[str]]:
    return {f"k{i}": ["v"] for i in range(n)}


def _values(n: int) -> list[str]:
    return [f"v{i}" for i in range(n)]


def _nested_or(levels: int) -> dict[str, Any]:
    policy: dict[str, Any] = {"leaf": ["x"]}
    for i in range(levels):
        policy = {"$or": [policy, {f"k{i}": ["y"]}]}
    return policy


# Policies at the limits that must compile.
VALID_CASES = [
    P(_keys(MAX_KEYS), id="exactly-5-keys"),
    P({"a": _values(MAX_COMBINATIONS)}, id="150-values-one-key"),
    P({"a": _values(10), "b": _values(15)}, id="150-combinations-product"),
    P({"a": _values(5), "$or": [{"b": _values(15)}, {"c": _values(15)}]}, id="150-with-or"),
    P({**_keys(3), "$or": [{"d": ["1"], "e": ["1"]}, {"f": ["1"], "g": ["1"]}]}, id="or-5-each"),
    P({**_keys(5), "$or": [{"k0": ["1"]}, {"k1": ["2"]}]}, id="or-reuses-outer-keys"),
    P(_nested_or(MAX_OR_DEPTH), id="or-max-depth"),
    P({"$or": [{"a": ["1"]}]}, id="or-single-branch"),
    P({"a": [{"anything-but": list(range(1000))}]}, id="anything-but-long-list"),
    P({"a": (1, 2)}, id="tuple-values"),
    P({"a": [{"prefix": ""}]}, id="empty-prefix"),
    # docs/protocol.md examples
    P({"gameId": "12345"}, id="spec-exact"),
    P({"gameId": ["1", "2"]}, id="spec-any-of"),
    P({"total": [{"numeric": [">=", 1000]}]}, id="spec-numeric"),
    P({"total": [{"numeric": [">", 0, "<=", 5]}]}, id="spec-range"),
    P({"type": [{"prefix": "order."}]}, id="spec-prefix"),
    P({"type": [{"suffix": ".created"}]}, id="spec-suffix"),
    P({"type": [{"anything-but": ["test"]}]}, id="spec-anything-but"),
    P({"type": [{"anything-but": {"prefix": "x"}}]}, id="spec-anything-but-prefix"),
    P({"type": [{"equals-ignore-case": "Goal"}]}, id="spec-eic"),
    P({"vip": [{"exists": True}]}, id="spec-exists"),
]


@pytest.mark.parametrize("policy", VALID_CASES)
def test_valid_policies_compile(policy: object) -> None:
    compiled = compile_filter(policy)
    assert not compiled.match_all
    assert compiled.canonical


# (policy, fragment of the error message)
INVALID_CASES = [
    # --- shape
    P("gameId", "JSON object", id="string-policy"),
    P(["a"], "JSON object", id="list-policy"),
    P(5, "JSON object", id="number-policy"),
    P(True, "JSON object", id="bool-policy"),
    P({"a": []}, "must not be empty", id="empty-value-list"),
    P({"a": {}}, "nested", id="nested-empty-object"),
    P({"a": {"b": ["x"]}}, "nested", id="nested-policy"),
    P({"a": [None]}, "null", id="null-in-list"),
    P({"a": None}, "null", id="null-scalar"),
    P({"a": [["x"]]}, "nested arrays", id="nested-array"),
    P({"a": [b"x"]}, "unsupported", id="bytes-value"),
    P({"a": [float("nan")]}, "finite", id="nan-value"),
    P({"a": [float("inf")]}, "finite", id="inf-value"),
    P({"": ["x"]}, "non-empty strings", id="empty-key"),
    P({1: ["x"]}, "non-empty strings", id="non-string-key"),
    P({"$and": [{"a": ["1"]}]}, "unknown operator", id="unknown-dollar-key"),
    # --- operator objects
    P({"a": [{}]}, "exactly one key", id="empty-operator"),
    P({"a": [{"prefix": "a", "suffix": "b"}]}, "exactly one key", id="two-operators"),
    P({"a": [{"wildcard": "a*"}]}, "unknown operator", id="unknown-operator"),
    P({"a": [{"$or": [{"b": ["1"]}]}]}, "unknown operator", id="or-inside-value-list"),
    P({"a": [{"prefix": 1}]}, "string", id="prefix-number"),
    P({"a": [{"prefix": None}]}, "string", id="prefix-null"),
    P({"a": [{"suffix": ["x"]}]}, "string", id="suffix-list"),
    P({"a": [{"equals-ignore-case": 5}]}, "string", id="eic-number"),
    # --- numeric
    P({"a": [{"numeric": 5}]}, "numeric expects", id="numeric-scalar"),
    P({"a": [{"numeric": []}]}, "numeric expects", id="numeric-empty"),
    P({"a": [{"numeric": [">"]}]}, "numeric expects", id="numeric-no-operand"),
    P({"a": [{"numeric": [">", 1, "<"]}]}, "numeric expects", id="numeric-three"),
    P({"a": [{"numeric": [">", 1, "<", 5, "=", 3]}]}, "numeric expects", id="numeric-six"),
    P({"a": [{"numeric": ["==", 5]}]}, "unknown numeric operator", id="numeric-bad-op"),
    P({"a": [{"numeric": ["!=", 5]}]}, "unknown numeric operator", id="numeric-ne"),
    P({"a": [{"numeric": [5, ">"]}]}, "unknown numeric operator", id="numeric-swapped"),
    P({"a": [{"numeric": [">", "5"]}]}, "must be a number", id="numeric-string-operand"),
    P({"a": [{"numeric": [">", True]}]}, "must be a number", id="numeric-bool-operand"),
    P({"a": [{"numeric": [">", None]}]}, "must be a number", id="numeric-null-operand"),
    P({"a": [{"numeric": ["<", float("inf")]}]}, "finite", id="numeric-inf"),
    P({"a": [{"numeric": ["<", 5, ">", 1]}]}, "must start with", id="range-upper-first"),
    P({"a": [{"numeric": ["=", 1, "<", 5]}]}, "must start with", id="range-eq-first"),
    P({"a": [{"numeric": [">", 1, ">", 5]}]}, "upper bound", id="range-two-lower"),
    P({"a": [{"numeric": [">", 1, "=", 5]}]}, "upper bound", id="range-eq-second"),
    P({"a": [{"numeric": [">", 1, "<", "5"]}]}, "must be a number", id="range-string-top"),
    P({"a": [{"numeric": [">", 5, "<", 1]}]}, "less than top", id="range-inverted"),
    P({"a": [{"numeric": [">=", 5, "<=", 5]}]}, "less than top", id="range-empty"),
    # --- anything-but
    P({"a": [{"anything-but": []}]}, "must not be empty", id="ab-empty"),
    P({"a": [{"anything-but": None}]}, "strings or numbers", id="ab-null"),
    P({"a": [{"anything-but": True}]}, "strings or numbers", id="ab-bool"),
    P({"a": [{"anything-but": [None]}]}, "strings or numbers", id="ab-null-in-list"),
    P({"a": [{"anything-but": [True]}]}, "strings or numbers", id="ab-bool-in-list"),
    P({"a": [{"anything-but": [["x"]]}]}, "strings or numbers", id="ab-nested-list"),
    P({"a": [{"anything-but": [float("nan")]}]}, "finite", id="ab-nan"),
    P({"a": [{"anything-but": {"prefix": 1}}]}, "string", id="ab-prefix-number"),
    P({"a": [{"anything-but": {"equals-ignore-case": "x"}}]}, "only", id="ab-eic"),
    P({"a": [{"anything-but": {"prefix": "a", "suffix": "b"}}]}, "exactly one", id="ab-two"),
    P({"a": [{"anything-but": {}}]}, "exactly one", id="ab-empty-object"),
    # --- exists
    P({"a": [{"exists": "true"}]}, "true or false", id="exists-string"),
    P({"a": [{"exists": 1}]}, "true or false", id="exists-number"),
    P({"a": [{"exists": None}]}, "true or false", id="exists-null"),
    # --- cidr
    P({"a": [{"cidr": "10.0.0.1"}]}, "needs a network", id="cidr-no-mask"),
    P({"a": [{"cidr": "10.0.0.0/33"}]}, "malformed cidr", id="cidr-mask-too-big"),
    P({"a": [{"cidr": "banana/8"}]}, "malformed cidr", id="cidr-garbage"),
    P({"a": [{"cidr": "10.0.0.0/x"}]}, "malformed cidr", id="cidr-mask-not-int"),
    P({"a": [{"cidr": 5}]}, "string", id="cidr-number"),
    # --- limits
    P(_keys(MAX_KEYS + 1), "at most 5", id="6-keys"),
    P({"a": _values(MAX_COMBINATIONS + 1)}, "too complex", id="151-values-one-key"),
    P({"a": _values(10), "b": _values(16)}, "too complex", id="160-combinations-product"),
    P({"a": _values(3), "b": _values(3), "c": _values(17)}, "too complex", id="153-three-keys"),
    P(
        {"a": _values(5), "$or": [{"b": _values(15)}, {"c": _values(16)}]},
        "too complex",
        id="155-or",
    ),
    P(
        {"a": _values(3), "$or": [{"b": _values(30)}, {"$or": [{"c": ["1"]}, {"d": _values(21)}]}]},
        "too complex",
        id="156-nested-or",
    ),
    P({**_keys(5), "$or": [{"f": ["1"]}, {"k0": ["1"]}]}, "at most 5", id="or-branch-6-keys"),
    P(
        {**_keys(3), "$or": [{"d": ["1"], "e": ["1"], "f": ["1"]}, {"g": ["1"]}]},
        "at most 5",
        id="or-6",
    ),
    P({"$or": [_keys(6), {"a": ["1"]}]}, "at most 5", id="or-branch-itself-6-keys"),
    P(_nested_or(MAX_OR_DEPTH + 1), "nested too deeply", id="or-too-deep"),
    P({"a": [{"anything-but": [f"{i:0>1000}" for i in range(300)]}]}, "larger", id="too-large"),
    # --- $or shape
    P({"$or": []}, "at least one", id="or-empty"),
    P({"$or": {"a": ["1"]}}, "array of policies", id="or-object"),
    P({"$or": [{}]}, "non-empty object", id="or-empty-branch"),
    P({"$or": ["a"]}, "must be an object", id="or-string-branch"),
    P({"$or": [{"a": []}, {"b": ["1"]}]}, "must not be empty", id="or-branch-invalid"),
]


@pytest.mark.parametrize(("policy", "fragment"), INVALID_CASES)
def test_invalid_policies_raise(policy: object, fragment: str) -> None:
    with pytest.raises(InvalidFilter) as info:
        compile_filter(policy)
    assert fragment in info.value.message
    assert info.value.code == "invalid_filter"
    assert info.value.status == 400


def test_error_names_the_offending_path() -> None:
    with pytest.raises(InvalidFilter) as info:
        compile_filter({"ok": ["1"], "$or": [{"a": ["1"]}, {"total": [{"numeric": ["~", 1]}]}]})
    assert info.value.details == {"path": "$or[1].total"}
    assert "'$or[1].total'" in info.value.message


# Pairs of policies that mean the same thing and must share one canonical key.
SAME_CANONICAL = [
    P({"a": ["1"], "b": ["2"]}, {"b": ["2"], "a": ["1"]}, id="key-order"),
    P({"a": ["1", "2"]}, {"a": ["2", "1"]}, id="value-order"),
    P({"a": ["1", "1"]}, {"a": ["1"]}, id="duplicate-values"),
    P({"a": "1"}, {"a": ["1"]}, id="scalar-shorthand"),
    P({"a": [5.0]}, {"a": [5]}, id="float-int"),
    P({"a": [{"numeric": [">", 1.0, "<", 2]}]}, {"a": [{"numeric": [">", 1, "<", 2.0]}]}, id="num"),
    P({"a": [{"anything-but": ["y", "x"]}]}, {"a": [{"anything-but": ["x", "y"]}]}, id="ab-order"),
    P({"a": [{"anything-but": "x"}]}, {"a": [{"anything-but": ["x"]}]}, id="ab-single"),
    P({"a": [{"equals-ignore-case": "GOAL"}]}, {"a": [{"equals-ignore-case": "goal"}]}, id="eic"),
    P({"a": [{"cidr": "10.0.0.9/24"}]}, {"a": [{"cidr": "10.0.0.0/24"}]}, id="cidr-host-bits"),
    P(
        {"a": [{"prefix": "p"}, "x", 3, True]},
        {"a": [True, 3, "x", {"prefix": "p"}]},
        id="mixed-entry-order",
    ),
    P(
        {"z": ["1"], "$or": [{"b": ["2"], "a": ["1"]}, {"c": ["3"]}]},
        {"$or": [{"c": ["3"]}, {"a": ["1"], "b": ["2"]}], "z": ["1"]},
        id="or-branch-and-key-order",
    ),
    P(None, {}, id="match-all"),
]


@pytest.mark.parametrize(("first", "second"), SAME_CANONICAL)
def test_canonical_is_deterministic(first: object, second: object) -> None:
    a, b = compile_filter(first), compile_filter(second)
    assert a.canonical == b.canonical
    assert a == b
    assert hash(a) == hash(b)


DIFFERENT_CANONICAL = [
    P({"a": ["1"]}, {"a": [1]}, id="string-vs-number"),
    P({"a": [1]}, {"a": [True]}, id="number-vs-bool"),
    P({"a": ["1"]}, {"b": ["1"]}, id="different-key"),
    P({"a": [{"prefix": "x"}]}, {"a": [{"suffix": "x"}]}, id="different-operator"),
    P({"a": [{"numeric": [">", 1]}]}, {"a": [{"numeric": [">=", 1]}]}, id="different-op"),
    P({"a": ["1"]}, None, id="vs-match-all"),
]


@pytest.mark.parametrize(("first", "second"), DIFFERENT_CANONICAL)
def test_canonical_distinguishes(first: object, second: object) -> None:
    assert compile_filter(first).canonical != compile_filter(second).canonical
    assert compile_filter(first) != compile_filter(second)


def test_canonical_is_compact_sorted_json() -> None:
    policy = compile_filter(
        {"type": [{"prefix": "order."}], "gameId": ["2", "1"], "$or": [{"b": [1]}, {"a": [True]}]}
    )
    assert policy.canonical == (
        '{"$or":[{"a":[true]},{"b":[1]}],"gameId":["1","2"],"type":[{"prefix":"order."}]}'
    )
    assert not policy.match_all


@pytest.mark.parametrize("policy", [None, {}])
def test_match_all(policy: object) -> None:
    compiled = compile_filter(policy)
    assert isinstance(compiled, FilterPolicy)
    assert compiled.match_all
    assert compiled.canonical == ""
    assert compiled.matches({}) and compiled.matches({"x": [1, "y"]})

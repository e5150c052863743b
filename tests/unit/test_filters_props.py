"""Property tests of filter policies (hypothesis): any JSON either compiles or is
refused with InvalidFilter, a compiled policy never raises on any attributes, the
canonical form round-trips, and matching agrees with a reference for a core subset."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import InvalidFilter
from shared.filters import FilterPolicy, compile_filter

# Generation speed varies on a shared CI machine: a slow draw is not a failure.
PROPS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

KEYS = ["a", "b", "$or", "prefix", "suffix", "numeric", "anything-but", "exists", "cidr",
        "equals-ignore-case", "=", "<", ">="]  # fmt: skip
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["a", "ab", "", "10.0.0.1", "10.0.0.0/8", ">", "<=", "=", "Goal"]),
    st.text(max_size=8),
)
# JSON as a client could send it (orjson refuses NaN and Infinity before this point).
json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    ),
    max_leaves=20,
)
# Policies shaped like real ones, with arbitrary operator arguments, so that most
# draws get past the first validation step.
OPERATORS = ["prefix", "suffix", "numeric", "anything-but", "exists", "cidr",
             "equals-ignore-case"]  # fmt: skip
operand = st.one_of(
    scalar, st.lists(scalar, max_size=4), st.dictionaries(st.sampled_from(KEYS), scalar, max_size=1)
)
entry = st.one_of(
    scalar, st.dictionaries(st.sampled_from(OPERATORS), operand, min_size=1, max_size=1)
)
key_policy = st.dictionaries(
    st.sampled_from(["a", "b", "c"]), st.one_of(entry, st.lists(entry, max_size=3)), max_size=3
)
near_policy = st.recursive(
    key_policy,
    lambda inner: st.fixed_dictionaries({"$or": st.lists(inner, max_size=3)}),
    max_leaves=6,
)
attr_value = st.one_of(scalar, st.lists(scalar, max_size=3))
attributes = st.dictionaries(st.sampled_from(["a", "b", "c"]), attr_value, max_size=3)


def compiled_or_refused(policy: object) -> FilterPolicy | None:
    try:
        return compile_filter(policy)
    except InvalidFilter:
        return None


@PROPS
@given(st.one_of(json_value, near_policy), st.lists(attributes, max_size=4))
def test_any_json_compiles_or_is_refused_and_matching_never_raises(
    policy: Any, messages: list[dict[str, Any]]
) -> None:
    compiled = compiled_or_refused(policy)
    if compiled is None:
        return
    again = compile_filter(json.loads(compiled.canonical) if compiled.canonical else None)
    assert again.canonical == compiled.canonical
    for attrs in messages:
        assert compiled.matches(attrs) is again.matches(attrs)
        assert isinstance(compiled.matches(attrs), bool)


# --- a core subset with a reference implementation ---------------------------------

exact_or_prefix = st.one_of(
    st.text(alphabet="abc", max_size=3),
    st.integers(-3, 3),
    st.fixed_dictionaries({"prefix": st.text(alphabet="abc", min_size=1, max_size=2)}),
)
simple_policy = st.dictionaries(
    st.sampled_from(["a", "b", "c"]), st.lists(exact_or_prefix, min_size=1, max_size=3), min_size=1
)
simple_attrs = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(
        st.text(alphabet="abc", max_size=3),
        st.integers(-3, 3),
        st.lists(st.text(alphabet="abc", max_size=3), max_size=2),
    ),
)


def reference_entry(entry: Any, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(entry, dict):
            if isinstance(v, str) and v.startswith(entry["prefix"]):
                return True
        elif isinstance(entry, str):
            if isinstance(v, str) and v == entry:
                return True
        elif isinstance(v, int) and not isinstance(v, bool) and v == entry:
            return True
    return False


def reference(policy: dict[str, list[Any]], attrs: dict[str, Any]) -> bool:
    return all(
        key in attrs and any(reference_entry(e, attrs[key]) for e in entries)
        for key, entries in policy.items()
    )


@PROPS
@given(simple_policy, simple_attrs)
def test_exact_and_prefix_matching_agree_with_a_reference(
    policy: dict[str, list[Any]], attrs: dict[str, Any]
) -> None:
    assert compile_filter(policy).matches(attrs) == reference(policy, attrs)


@PROPS
@given(simple_policy, simple_policy, simple_attrs)
def test_or_matches_when_either_branch_matches(
    left: dict[str, list[Any]], right: dict[str, list[Any]], attrs: dict[str, Any]
) -> None:
    either = compile_filter({"$or": [left, right]})
    assert either.matches(attrs) == (reference(left, attrs) or reference(right, attrs))


@PROPS
@given(simple_policy)
def test_canonical_form_ignores_key_order(policy: dict[str, list[Any]]) -> None:
    reordered = dict(reversed(list(policy.items())))
    assert compile_filter(reordered).canonical == compile_filter(policy).canonical

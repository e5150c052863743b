"""Table-driven tests for shared/topics.py (SPEC §1)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from shared.errors import InvalidTopic
from shared.topics import (
    MAX_SEGMENTS,
    MAX_TOPIC_BYTES,
    is_wildcard,
    pattern_covers,
    pattern_matches,
    validate_pattern,
    validate_topic,
)

P = pytest.param

# A topic exactly at the byte limit: 14 x 16 + 17 bytes of segments + 14 dots = 255.
TOPIC_255 = ".".join(["a" * 16] * 14 + ["a" * 17])
assert len(TOPIC_255) == MAX_TOPIC_BYTES

VALID_TOPICS = [
    P("game", id="one-segment"),
    P("game.12345.score", id="spec-example"),
    P("a", id="one-char"),
    P("A-z_0:9@x", id="every-allowed-char"),
    P("user@example:com.room-1", id="at-colon-dash"),
    P(".".join(["s"] * MAX_SEGMENTS), id="16-segments"),
    P(TOPIC_255, id="255-bytes"),
    P("x" * MAX_TOPIC_BYTES, id="255-bytes-one-segment"),
]

INVALID_TOPICS = [
    P("", id="empty"),
    P(".game", id="leading-dot"),
    P("game.", id="trailing-dot"),
    P("game..score", id="empty-middle-segment"),
    P(".", id="only-dot"),
    P(".".join(["s"] * (MAX_SEGMENTS + 1)), id="17-segments"),
    P(TOPIC_255 + "a", id="256-bytes"),
    P("x" * (MAX_TOPIC_BYTES + 1), id="256-bytes-one-segment"),
    P("game score", id="space"),
    P("game/score", id="slash"),
    P("game#1", id="hash"),
    P("game!", id="bang"),
    P("gäme", id="non-ascii"),
    P("game\n", id="trailing-newline"),
    P("game.*", id="star-is-not-a-topic"),
    P("game.>", id="gt-is-not-a-topic"),
    P("*", id="lone-star"),
    P(">", id="lone-gt"),
]


VALID_PATTERNS = [
    P("game.12345.score", id="concrete"),
    P("game.*.score", id="star-middle"),
    P("game.*", id="star-last"),
    P("*.score", id="star-first"),
    P("*", id="lone-star"),
    P("*.*.*", id="all-stars"),
    P("game.>", id="gt-last"),
    P(">", id="lone-gt"),
    P("game.*.>", id="star-then-gt"),
    P("*.>", id="star-gt"),
    P(".".join(["*"] * MAX_SEGMENTS), id="16-stars"),
    P(".".join(["s"] * (MAX_SEGMENTS - 1) + [">"]), id="16-segments-gt"),
    P(TOPIC_255, id="255-bytes"),
]

INVALID_PATTERNS = [
    P("", id="empty"),
    P("game.", id="trailing-dot"),
    P(".game", id="leading-dot"),
    P("game..score", id="empty-segment"),
    P("game.>.score", id="gt-not-last"),
    P(">.game", id="gt-first"),
    P(">.>", id="two-gt"),
    P("ga*", id="partial-star-suffix"),
    P("*me", id="partial-star-prefix"),
    P("game.sc*re", id="partial-star-middle"),
    P("**", id="double-star"),
    P("game.g>", id="partial-gt"),
    P(">>", id="double-gt"),
    P("game.#", id="hash-wildcard"),
    P("game score", id="space"),
    P("gäme.*", id="non-ascii"),
    P(".".join(["*"] * (MAX_SEGMENTS + 1)), id="17-segments"),
    P(".".join(["s"] * MAX_SEGMENTS + [">"]), id="17-segments-gt"),
    P(TOPIC_255 + "a", id="256-bytes"),
    P("game.>\n", id="trailing-newline"),
]


NON_STRING_TOPICS = [None, 5, b"game", ["game"]]
NON_STRING_PATTERNS = [None, 5, b"game.*", ["game"]]


def by_validator(topics: list[Any], patterns: list[Any]) -> list[Any]:
    """(validator, value) cases: `topics` for validate_topic, `patterns` for validate_pattern."""
    out = []
    for name, validate, cases in (
        ("topic", validate_topic, topics),
        ("pattern", validate_pattern, patterns),
    ):
        for i, case in enumerate(cases):
            values, ident = (case.values, case.id) if hasattr(case, "values") else ((case,), i)
            out.append(P(validate, *values, id=f"{name}-{ident}"))
    return out


@pytest.mark.parametrize(("validate", "value"), by_validator(VALID_TOPICS, VALID_PATTERNS))
def test_validate_accepts(validate: Callable[[object], str], value: str) -> None:
    assert validate(value) == value


@pytest.mark.parametrize(("validate", "value"), by_validator(INVALID_TOPICS, INVALID_PATTERNS))
def test_validate_rejects(validate: Callable[[object], str], value: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        validate(value)
    assert info.value.code == "invalid_topic"


@pytest.mark.parametrize(
    ("validate", "value"), by_validator(NON_STRING_TOPICS, NON_STRING_PATTERNS)
)
def test_validate_rejects_non_strings(validate: Callable[[object], str], value: object) -> None:
    with pytest.raises(InvalidTopic):
        validate(value)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        P("game.1.score", False, id="concrete"),
        P("game.*.score", True, id="star"),
        P("game.>", True, id="gt"),
        P(">", True, id="lone-gt"),
        P("*", True, id="lone-star"),
    ],
)
def test_is_wildcard(pattern: str, expected: bool) -> None:
    assert is_wildcard(pattern) is expected


# (pattern, topic, expected)
MATCH_CASES = [
    # exact
    P("game.1.score", "game.1.score", True, id="exact"),
    P("game.1.score", "game.2.score", False, id="exact-other"),
    P("game.1", "game.1.score", False, id="exact-prefix-only"),
    P("game.1.score", "game.1", False, id="exact-longer"),
    # `*` is exactly one segment
    P("game.*.score", "game.1.score", True, id="star-middle"),
    P("game.*.score", "game.1.goals", False, id="star-middle-tail-differs"),
    P("game.*.score", "game.score", False, id="star-needs-a-segment"),
    P("game.*.score", "game.1.2.score", False, id="star-only-one-segment"),
    P("game.*", "game.1", True, id="star-last"),
    P("game.*", "game", False, id="star-last-missing"),
    P("game.*", "game.1.score", False, id="star-last-too-long"),
    P("*", "game", True, id="lone-star"),
    P("*", "game.1", False, id="lone-star-two-segments"),
    P("*.*", "a.b", True, id="two-stars"),
    P("*.score", "game.score", True, id="star-first"),
    P("*.score", "game.goals", False, id="star-first-miss"),
    # `>` is one or more trailing segments
    P("game.>", "game.1", True, id="gt-one"),
    P("game.>", "game.1.score", True, id="gt-many"),
    P("game.>", "game", False, id="gt-needs-one-segment"),
    P("game.>", "games.1", False, id="gt-prefix-is-per-segment"),
    P(">", "game", True, id="lone-gt-one"),
    P(">", "game.1.score", True, id="lone-gt-many"),
    P("game.*.>", "game.1.score", True, id="star-gt"),
    P("game.*.>", "game.1", False, id="star-gt-needs-tail"),
    P("game.*.>", "other.1.score", False, id="star-gt-head-differs"),
    P(
        ".".join(["s"] * (MAX_SEGMENTS - 1) + [">"]),
        ".".join(["s"] * MAX_SEGMENTS),
        True,
        id="gt-at-segment-limit",
    ),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCH_CASES)
def test_pattern_matches(pattern: str, topic: str, expected: bool) -> None:
    assert pattern_matches(validate_pattern(pattern), validate_topic(topic)) is expected


# (allowed, requested, expected): does `allowed` cover every topic `requested` matches?
COVER_CASES = [
    P("game.1.score", "game.1.score", True, id="same-concrete"),
    P("game.1.score", "game.2.score", False, id="other-concrete"),
    P("game.*.score", "game.1.score", True, id="star-covers-concrete"),
    P("game.*.score", "game.*.score", True, id="star-covers-star"),
    P("game.1.score", "game.*.score", False, id="concrete-not-star"),
    P("game.*.score", "game.*.goals", False, id="star-tail-differs"),
    P("game.>", "game.*.score", True, id="gt-covers-star"),
    P("game.>", "game.1", True, id="gt-covers-concrete"),
    P("game.>", "game.>", True, id="gt-covers-gt"),
    P("game.>", "game.*.>", True, id="gt-covers-star-gt"),
    P("game.>", "game", False, id="gt-not-parent"),
    P("game.>", "other.>", False, id="gt-other-prefix"),
    P("game.*", "game.>", False, id="star-not-gt"),
    P("game.*", "game.*.x", False, id="star-not-longer"),
    P("game.*.>", "game.>", False, id="star-gt-not-gt"),
    P(">", "*", True, id="lone-gt-covers-star"),
    P(">", ">", True, id="lone-gt-covers-gt"),
    P(">", "a.b.c", True, id="lone-gt-covers-concrete"),
    P("*", ">", False, id="star-not-lone-gt"),
    P("*.>", ">", False, id="star-gt-not-lone-gt"),
    P("*", "*", True, id="star-covers-star-alone"),
    P("a.b", "a.b.c", False, id="shorter-concrete"),
    P("a.b.c", "a.b", False, id="longer-concrete"),
]


@pytest.mark.parametrize(("allowed", "requested", "expected"), COVER_CASES)
def test_pattern_covers(allowed: str, requested: str, expected: bool) -> None:
    assert pattern_covers(validate_pattern(allowed), validate_pattern(requested)) is expected


def _all_patterns(max_len: int) -> list[str]:
    out = []
    for n in range(1, max_len + 1):
        for segs in itertools.product(["x", "y", "*", ">"], repeat=n):
            if ">" in segs[:-1]:
                continue
            out.append(".".join(segs))
    return out


def _all_topics(max_len: int) -> list[str]:
    # "z" never appears in a pattern, so it stands for "any other segment".
    return [
        ".".join(segs)
        for n in range(1, max_len + 1)
        for segs in itertools.product(["x", "y", "z"], repeat=n)
    ]


def test_pattern_covers_agrees_with_pattern_matches() -> None:
    """Exhaustively: covers(a, p) iff every topic p matches is also matched by a."""
    patterns = _all_patterns(3)
    topics = _all_topics(4)
    matched = {p: frozenset(t for t in topics if pattern_matches(p, t)) for p in patterns}
    for allowed in patterns:
        for requested in patterns:
            expected = matched[requested] <= matched[allowed]
            assert pattern_covers(allowed, requested) is expected, (allowed, requested)

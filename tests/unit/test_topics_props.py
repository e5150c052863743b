"""Property tests of topics and patterns (hypothesis), against a regex reference."""

from __future__ import annotations

import contextlib
import itertools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import InvalidTopic
from shared.topics import (
    MAX_SEGMENTS,
    MAX_TOPIC_BYTES,
    pattern_covers,
    pattern_matches,
    validate_pattern,
    validate_topic,
)

# Generation speed varies on a shared CI machine: a slow draw is not a failure.
PROPS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

segment = st.text(alphabet="abcXYZ019_:@-", min_size=1, max_size=12)
topic = (
    st.lists(segment, min_size=1, max_size=MAX_SEGMENTS)
    .map(".".join)
    .filter(lambda t: len(t) <= MAX_TOPIC_BYTES)
)
# A small alphabet so that patterns and topics often match.
small_topic = st.lists(st.sampled_from("ab"), min_size=1, max_size=5).map(".".join)


@st.composite
def small_pattern(draw: st.DrawFn) -> str:
    segs = draw(st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=4))
    if draw(st.booleans()):
        segs[-1] = ">"
    return ".".join(segs)


def reference_matches(pattern: str, topic: str) -> bool:
    parts = [
        "[^.]+" if s == "*" else ".+" if s == ">" else re.escape(s) for s in pattern.split(".")
    ]
    return re.fullmatch(r"\.".join(parts), topic) is not None


@PROPS
@given(topic)
def test_generated_topics_are_valid_topics_and_patterns(t: str) -> None:
    assert validate_topic(t) == t
    assert validate_pattern(t) == t
    assert pattern_matches(t, t)


@PROPS
@given(
    st.one_of(
        st.text(max_size=300), st.text(alphabet="ab.*>", max_size=40), st.none(), st.integers()
    )
)
def test_any_input_is_valid_or_invalid_topic(value: object) -> None:
    for validate in (validate_topic, validate_pattern):
        with contextlib.suppress(InvalidTopic):
            assert validate(value) == value


@PROPS
@given(small_pattern(), small_topic)
def test_pattern_matches_agrees_with_a_regex(pattern: str, t: str) -> None:
    assert validate_pattern(pattern) == pattern
    assert pattern_matches(pattern, t) == reference_matches(pattern, t)


@PROPS
@given(topic, st.data())
def test_wildcarding_segments_of_a_topic_still_matches_it(t: str, data: st.DataObject) -> None:
    segs = t.split(".")
    stars = data.draw(st.lists(st.booleans(), min_size=len(segs), max_size=len(segs)))
    pattern = [("*" if star else s) for s, star in zip(segs, stars, strict=True)]
    assert pattern_matches(".".join(pattern), t)
    cut = data.draw(st.integers(0, len(segs) - 1))
    tail = ".".join([*pattern[:cut], ">"])
    assert pattern_matches(tail, t)
    assert not pattern_matches(".".join([*segs, ">"]), t)  # `>` needs one more segment


# Every topic over {a, b, c} of 1-6 segments: longer than any small pattern, with a
# letter no pattern names, so a missing match shows up within the universe.
UNIVERSE = [".".join(p) for n in range(1, 7) for p in itertools.product("abc", repeat=n)]


@PROPS
@given(small_pattern(), small_pattern())
def test_pattern_covers_is_inclusion_of_matched_topics(allowed: str, pattern: str) -> None:
    included = all(pattern_matches(allowed, t) for t in UNIVERSE if pattern_matches(pattern, t))
    assert pattern_covers(allowed, pattern) == included

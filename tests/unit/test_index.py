"""SubscriptionIndex against a brute-force matcher on random patterns."""

from __future__ import annotations

import random

import pytest

from fanout.index import SubscriptionIndex
from shared.topics import pattern_matches

SEGS = ["a", "b", "c"]


def random_pattern(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return ">"  # bare `>` lives on the root itself (issue 9)
    n = rng.randint(1, 4)
    segs = [rng.choice([*SEGS, "*"]) for _ in range(n)]
    if rng.random() < 0.3:
        segs[-1] = ">"
    return ".".join(segs)


def all_topics() -> list[str]:
    out = [""]
    topics = []
    for _ in range(4):
        out = [f"{p}.{s}" if p else s for p in out for s in SEGS]
        topics += out
    return topics


def check_against_brute_force(index: SubscriptionIndex[int], patterns: dict[int, str]) -> None:
    assert len(index) == len(patterns)
    for topic in all_topics():
        expected = {i for i, p in patterns.items() if pattern_matches(p, topic)}
        assert set(index.match(topic)) == expected, (topic, sorted(patterns.values()))


def test_index_matches_brute_force_including_removals() -> None:
    rng = random.Random(7)
    index: SubscriptionIndex[int] = SubscriptionIndex()
    patterns: dict[int, str] = {}
    for i in range(200):
        p = random_pattern(rng)
        patterns[i] = p
        index.add(p, i)
    for i in rng.sample(sorted(patterns), 80):
        index.remove(patterns.pop(i), i)
    check_against_brute_force(index, patterns)


@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_index_matches_brute_force_on_tiny_sets(size: int) -> None:
    """Degenerate sets (empty, one pattern) hide bugs large random sets never draw."""
    rng = random.Random(size)
    for _ in range(300):
        index: SubscriptionIndex[int] = SubscriptionIndex()
        patterns = {i: random_pattern(rng) for i in range(size)}
        for i, p in patterns.items():
            index.add(p, i)
        check_against_brute_force(index, patterns)


@pytest.mark.parametrize("pattern", [">", "*", "a"])
def test_a_single_pattern_alone_matches(pattern: str) -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add(pattern, "x")
    assert index.match("a") == ["x"]
    index.remove(pattern, "x")
    assert index.match("a") == []


def test_index_cache_is_invalidated_on_change() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("a.*", "x")
    assert index.match("a.b") == ["x"]
    index.add("a.b", "y")
    assert set(index.match("a.b")) == {"x", "y"}
    index.remove("a.*", "x")
    assert index.match("a.b") == ["y"]


def test_removing_everything_prunes_the_trie() -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    for i, p in enumerate(["a.*.c", "a.>", "*.b", "a.b.c.>"]):
        index.add(p, i)
    for i, p in enumerate(["a.*.c", "a.>", "*.b", "a.b.c.>"]):
        index.remove(p, i)
    assert len(index) == 0
    assert index._root.children == {}

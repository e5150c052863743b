"""Topics and patterns (docs/protocol.md, Topics).

A topic is 1–255 bytes of `[A-Za-z0-9_:@-]` segments joined by `.`, at most 16
segments. A pattern may use `*` for one whole segment and `>` as the last segment
for one or more trailing segments.
"""

from __future__ import annotations

import re

from shared.errors import InvalidTopic

MAX_TOPIC_BYTES = 255
MAX_SEGMENTS = 16

_SEGMENT = re.compile(r"[A-Za-z0-9_:@-]+")
_TOPIC = re.compile(r"[A-Za-z0-9_:@-]+(?:\.[A-Za-z0-9_:@-]+){0,15}")


def validate_topic(topic: object) -> str:
    """Return `topic` if it is a concrete topic, else raise `InvalidTopic`."""
    if not isinstance(topic, str):
        raise InvalidTopic("topic must be a string")
    # The regex alone bounds segment count; the byte length is checked separately
    # because the charset is ASCII so len() equals the byte length.
    if not topic or len(topic) > MAX_TOPIC_BYTES or _TOPIC.fullmatch(topic) is None:
        raise InvalidTopic(f"invalid topic {topic!r}", details={"topic": topic})
    return topic


def validate_pattern(pattern: object) -> str:
    """Return `pattern` if it is a topic or a valid wildcard pattern, else raise."""
    if not isinstance(pattern, str):
        raise InvalidTopic("topic must be a string")
    if not pattern or len(pattern) > MAX_TOPIC_BYTES:
        raise InvalidTopic(f"invalid pattern {pattern!r}", details={"topic": pattern})
    segments = pattern.split(".")
    if len(segments) > MAX_SEGMENTS:
        raise InvalidTopic(f"too many segments in {pattern!r}", details={"topic": pattern})
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg == "*" or (seg == ">" and i == last):
            continue
        if _SEGMENT.fullmatch(seg) is None:
            raise InvalidTopic(f"invalid pattern {pattern!r}", details={"topic": pattern})
    return pattern


def is_wildcard(pattern: str) -> bool:
    """True when `pattern` has a `*` or `>` segment."""
    return "*" in pattern or pattern.endswith(">")


def pattern_matches(pattern: str, topic: str) -> bool:
    """Whether a valid `pattern` matches a valid concrete `topic`."""
    if not is_wildcard(pattern):
        return pattern == topic
    # A concrete topic is the pattern that matches only itself.
    return pattern_covers(pattern, topic)


def pattern_covers(allowed: str, pattern: str) -> bool:
    """Whether every topic matched by `pattern` is also matched by `allowed`.

    Used for JWT `subscribe`/`publish` claims: a client may subscribe to
    `game.*.score` only if a claim such as `game.>` covers all of it.
    """
    a = allowed.split(".")
    p = pattern.split(".")
    for i, seg in enumerate(a):
        if seg == ">":
            # `>` needs at least one more segment; `p[i]` may be anything, even `>`.
            return len(p) > i
        if i >= len(p):
            return False
        if p[i] == ">":
            return False  # `>` in the request is broader than any single segment
        if seg != "*" and (p[i] == "*" or seg != p[i]):
            return False
    return len(a) == len(p)

"""Every Redis key and channel name of the backplane, in one place (arq's rule).

Per-topic state carries the topic as a hash tag, `{topic}`, so that a topic's
offset counter, epoch, history and idempotency keys live in one cluster slot and
the publish script stays single-slot. The exact-topic channel uses the same tag,
so on Redis Cluster the script can SPUBLISH it too.

    herald:t:{T}:m        hash  e (epoch), n (last offset), t (ts of last append, ms)
    herald:t:{T}:h        stream of the topic's history; entry id `<offset>-0`,
                          fields t (ts, ms) and e (envelope with offset)
    herald:t:{T}:i:<id>   string, the first result of an idempotent publish (300 s)
    herald:prefixes       zset `<pod>:<prefix>` → expiry (ms): wildcard interest
    herald:presence       zset `<pod>` → expiry (ms): pods publishing presence
    herald:presence:<pod> string, JSON {"p": {pattern: [subs, msgs]}, "s": counters} (presence.py)
    channel herald:t:{T}  every message of topic T
    channel herald:p:<P>  every message of topics under prefix P, published only
                          while some pod watches a pattern whose literal prefix is P
    channel herald:ctl    control notices (prefix interest added/removed)
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.topics import is_wildcard

NS = "herald"
PREFIXES_KEY = f"{NS}:prefixes"
PRESENCE_KEY = f"{NS}:presence"
CONTROL_CHANNEL = f"{NS}:ctl".encode()
_TOPIC_CHANNEL = f"{NS}:t:"
_PREFIX_CHANNEL = f"{NS}:p:"


def meta_key(topic: str) -> str:
    return f"{NS}:t:{{{topic}}}:m"


def history_key(topic: str) -> str:
    return f"{NS}:t:{{{topic}}}:h"


def idempotency_key(topic: str, msg_id: str) -> str:
    return f"{NS}:t:{{{topic}}}:i:{msg_id}"


def presence_key(pod: str) -> str:
    return f"{PRESENCE_KEY}:{pod}"


def topic_channel(topic: str) -> bytes:
    """The channel that carries every message of `topic`."""
    return f"{_TOPIC_CHANNEL}{{{topic}}}".encode()


def prefix_channel(prefix: str) -> bytes:
    """The channel that carries messages of topics under `prefix` ("" is the root)."""
    return f"{_PREFIX_CHANNEL}{prefix}".encode()


def literal_prefix(pattern: str) -> str:
    """The segments of a wildcard pattern before its first wildcard segment.

    `game.*.score` → `game`, `game.>` → `game`, `*.x` → `` (the root).
    """
    segments = pattern.split(".")
    for i, seg in enumerate(segments):
        if seg == "*" or seg == ">":
            return ".".join(segments[:i])
    raise ValueError(f"{pattern!r} is not a wildcard pattern")


def interest_channel(pattern: str) -> bytes:
    """The one channel a pod subscribes to for local subscribers of `pattern`."""
    if is_wildcard(pattern):
        return prefix_channel(literal_prefix(pattern))
    return topic_channel(pattern)


def topic_prefixes(topic: str) -> Iterator[str]:
    """Every literal prefix a matching wildcard pattern of `topic` can have.

    A pattern matching `a.b.c` has at least one wildcard segment, so its literal
    prefix is one of ``, `a`, `a.b` (never the whole topic).
    """
    yield ""
    i = topic.find(".")
    while i != -1:
        yield topic[:i]
        i = topic.find(".", i + 1)

"""Every Redis key and channel of the queue store, in one place (STYLE.md, arq).

All keys start with a namespace prefix. The keys of one queue carry the hash tag
`{q:<name>}`, so on Redis Cluster they share a slot and each Lua script (which
only ever touches one queue) runs on one node. Moves between queues (dead-letter,
redrive) go through a per-queue outbox instead of one cross-slot script.

Per queue (`<ns>:{q:<name>}:<part>`):

    meta       HASH  attrs (JSON), seq, sent_total, received_total, deleted_total,
                     dead_lettered_total
    bodies     HASH  id -> payload JSON {"body", "attributes"}
    state      HASH  id -> JSON {s: seq, p: priority, g: group, rc: receive count,
                     r: current receipt token, t: sent ms, f: first received ms,
                     src: source queue (dead-lettered), nodlq}
    ready      ZSET  visible ids of a standard queue, score (9 - priority) * 2^49 + seq
    delayed    ZSET  id -> due time (not yet visible, never claimed since)
    inflight   ZSET  id -> visibility deadline
    expiry     ZSET  id -> retention deadline
    dedup      HASH  dedup id -> first message id
    dedup_exp  ZSET  dedup id -> end of its 5-minute window
    groups     ZSET  FIFO groups whose head is visible, score = head seq
    gmsgs      ZSET  FIFO order, lexicographic members "<group>\\0<seq:016x><id>"
    outbox     HASH  move id -> message leaving for another queue
    moved      ZSET  move ids already imported here (so a replayed move is a no-op)
    waiting    STRING set while a receive long-polls, so sends know to publish a wake-up

Global: `<ns>:queues` (SET of names), `<ns>:subs` (HASH id -> subscription JSON),
`<ns>:subs:version` (read and written together with `subs`, by one script). On a
Redis Cluster they carry one more hash tag, `<ns>:{<ns>:global}:queues` etc., so
the subscription scripts are single-slot; a single Redis keeps the untagged names
(its existing data stays where it is). Channels `<ns>:wake:<name>` and
`<ns>:subs:changed` are classic pub/sub, which a cluster broadcasts to every node.
"""

from __future__ import annotations

import re

QUEUE_PARTS = (
    "meta",
    "bodies",
    "state",
    "ready",
    "delayed",
    "inflight",
    "expiry",
    "dedup",
    "dedup_exp",
    "groups",
    "gmsgs",
    "outbox",
    "moved",
    "waiting",
)
OUTBOX = QUEUE_PARTS.index("outbox")
META = QUEUE_PARTS.index("meta")

_NAMESPACE = re.compile(r"[A-Za-z0-9_:.-]{1,64}")


class RedisKeys:
    """Key and channel names under one namespace."""

    def __init__(self, namespace: str, *, cluster: bool = False) -> None:
        if _NAMESPACE.fullmatch(namespace) is None:
            # A brace in the prefix would become the hash tag and break slot locality.
            raise ValueError(f"invalid Redis namespace {namespace!r}")
        self.ns = namespace
        self.cluster = cluster
        # The global keys: one slot on a cluster, the historical names elsewhere.
        self._global = f"{namespace}:{{{namespace}:global}}" if cluster else namespace
        # Fixed for the namespace: plain attributes, computed once.
        self.registry = f"{self._global}:queues"
        self.subscriptions = f"{self._global}:subs"
        self.subscriptions_version = f"{self._global}:subs:version"
        self.subscriptions_channel = f"{namespace}:subs:changed"
        self.wake_pattern = f"{namespace}:wake:*"

    def queue(self, name: str) -> list[str]:
        """The keys of one queue, in the order the Lua scripts unpack them."""
        tag = "{q:" + name + "}"
        return [f"{self.ns}:{tag}:{part}" for part in QUEUE_PARTS]

    def meta(self, key: str) -> str:
        """A small global setting stored with the queues (e.g. history rules)."""
        return f"{self._global}:meta:{key}"

    @property
    def sns_topics(self) -> str:
        """HASH name -> attributes JSON of the topics created through the SNS API."""
        return f"{self._global}:sns_topics"

    def wake_channel(self, name: str) -> str:
        return f"{self.ns}:wake:{name}"

    def queue_of_wake_channel(self, channel: str) -> str:
        return channel[len(self.ns) + len(":wake:") :]

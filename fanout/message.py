"""The engine's message: a topic envelope encoded once, at the pod that accepted it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(slots=True, frozen=True, init=False)
class Message:
    """A published message as the engine sees it.

    `envelope` is the wire form of docs/protocol.md, Messages (`topic`, `id`, `ts`, `data`,
    `attributes`?, `offset`?) serialized once; every frame that carries the
    message splices these bytes in rather than encoding again.
    """

    topic: str
    id: str
    ts: int
    attributes: dict[str, Any]
    offset: int | None
    envelope: bytes

    def __init__(
        self,
        topic: str,
        id: str,
        ts: int,
        attributes: dict[str, Any],
        offset: int | None,
        envelope: bytes,
    ) -> None:
        # The slots' own setters: a frozen dataclass's generated __init__ goes through
        # object.__setattr__ once a field, half the cost of building a message
        # (one per publish, and one per receiving pod).
        _set_topic(self, topic)
        _set_id(self, id)
        _set_ts(self, ts)
        _set_attributes(self, attributes)
        _set_offset(self, offset)
        _set_envelope(self, envelope)

    @classmethod
    def build(
        cls,
        topic: str,
        msg_id: str,
        ts: int,
        data: Any,
        attributes: dict[str, Any] | None,
        offset: int | None = None,
    ) -> Message:
        """Encode the envelope of a new message."""
        env: dict[str, Any] = {"topic": topic, "id": msg_id, "ts": ts, "data": data}
        if attributes:
            env["attributes"] = attributes
        if offset is not None:
            env["offset"] = offset
        return cls(topic, msg_id, ts, attributes or {}, offset, orjson.dumps(env))

    @classmethod
    def from_envelope(cls, envelope: bytes) -> Message:
        """Decode a message received from a backplane (once per receiving pod)."""
        env = orjson.loads(envelope)
        return cls(
            env["topic"],
            env["id"],
            env["ts"],
            env.get("attributes") or {},
            env.get("offset"),
            envelope,
        )

    def with_offset(self, offset: int) -> Message:
        """The same message with its per-topic offset spliced into the envelope.

        Splicing (rather than re-encoding) keeps encode-once true on the publish
        path, and the Redis script does the same in Lua.
        """
        envelope = self.envelope[:-1] + b',"offset":%d}' % offset
        return Message(self.topic, self.id, self.ts, self.attributes, offset, envelope)

    def as_dict(self) -> dict[str, Any]:
        """The envelope as a dict (history pages, queue bodies)."""
        out: dict[str, Any] = orjson.loads(self.envelope)
        return out


_set_topic, _set_id, _set_ts, _set_attributes, _set_offset, _set_envelope = (
    Message.__dict__[name].__set__
    for name in ("topic", "id", "ts", "attributes", "offset", "envelope")
)

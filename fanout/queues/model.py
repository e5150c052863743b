"""Queue attributes, send entries and receipts: validation shared by every store.

Everything here is pure (no I/O, no clock reads), so both stores agree on what a
valid queue, message and receipt is, and the limits live in one place (SPEC §5).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from shared.errors import InvalidRequest, ReceiptInvalid
from shared.jsonvalue import check_fields

# Limits of SPEC §5 (SQS values; Herald allows batches of 100 instead of 10).
MAX_VISIBILITY_S = 43_200
MAX_DELAY_S = 900
MIN_RETENTION_S = 60
MAX_RETENTION_S = 1_209_600
DEFAULT_VISIBILITY_S = 30
DEFAULT_RETENTION_S = 345_600
DEFAULT_MAX_MESSAGE_BYTES = 262_144
MIN_MESSAGE_BYTES = 1_024
MAX_MESSAGE_BYTES = 1_048_576
MAX_RECEIVE_COUNT = 1_000
MAX_BATCH = 100
MAX_WAIT_S = 20
MAX_PRIORITY = 9
DEDUP_WINDOW_S = 300
MAX_TOKEN_CHARS = 128  # group and dedup ids
MAX_DEPTH_LIMIT = 10**12  # the largest `max_depth` a queue may set

_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}(\.fifo)?")
# Group and dedup ids: printable ASCII without spaces, as in SQS. The Redis store
# relies on them never holding NUL or \x01 (they delimit its group index).
_TOKEN = re.compile(rf"[!-~]{{1,{MAX_TOKEN_CHARS}}}")
_ENTRY_KEYS = frozenset({"body", "attributes", "delay", "priority", "dedup_id", "group_id"})
_ATTR_KEYS = frozenset(
    {
        "visibility_timeout",
        "delay",
        "retention",
        "max_message_bytes",
        "dead_letter",
        "fifo",
        "content_dedup",
        "max_depth",
    }
)


def validate_name(name: object) -> str:
    """Return a valid queue name or raise `InvalidRequest`."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidRequest(
            f"invalid queue name {name!r}: use [A-Za-z0-9_-]{{1,80}} plus '.fifo' for fifo queues",
            details={"queue": name},
        )
    return name


def is_fifo_name(name: str) -> bool:
    return name.endswith(".fifo")


def number(value: object, field: str, lo: float, hi: float) -> int | float:
    """A JSON number within [lo, hi]; integral floats come back as ints."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidRequest(f"'{field}' must be a number from {lo:g} to {hi:g}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def integer(value: object, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidRequest(f"'{field}' must be an integer from {lo} to {hi}")
    return value


@dataclass(frozen=True, slots=True)
class DeadLetter:
    queue: str
    max_receive_count: int


@dataclass(frozen=True, slots=True)
class QueueAttrs:
    """The settable attributes of one queue (`PUT /v1/queues/{name}`)."""

    name: str
    fifo: bool
    visibility_timeout: int | float = DEFAULT_VISIBILITY_S
    delay: int | float = 0
    retention: int | float = DEFAULT_RETENTION_S
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    dead_letter: DeadLetter | None = None
    content_dedup: bool = False
    max_depth: int | None = None
    created_at: int = 0  # Unix ms

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> QueueAttrs:
        data = orjson.loads(raw)
        dl = data.pop("dead_letter", None)
        return cls(**data, dead_letter=DeadLetter(**dl) if dl else None)


def merge_attrs(
    name: str, existing: QueueAttrs | None, patch: Mapping[str, Any], now_ms: int
) -> QueueAttrs:
    """Apply a PUT body to a queue: given keys replace, missing keys keep their value.

    `"dead_letter": null` removes the dead-letter target. The kind of a queue is
    fixed by its name (`.fifo`), so `fifo` may be given only to confirm it.
    """
    unknown = set(patch) - _ATTR_KEYS
    if unknown:
        raise InvalidRequest(f"unknown queue attributes: {', '.join(sorted(unknown))}")
    fifo = is_fifo_name(name)
    if "fifo" in patch and patch["fifo"] is not None:
        if not isinstance(patch["fifo"], bool):
            raise InvalidRequest("'fifo' must be a boolean")
        if patch["fifo"] != fifo:
            raise InvalidRequest("fifo queues, and only they, have names ending in '.fifo'")
    base = existing or QueueAttrs(name=name, fifo=fifo, created_at=now_ms)
    values = base.as_dict()
    values["dead_letter"] = base.dead_letter
    for key, value in patch.items():
        if key == "fifo":
            continue
        if value is None and key not in ("dead_letter", "max_depth"):
            continue  # null means "leave as is" for the scalar attributes
        if key == "visibility_timeout":
            values[key] = number(value, key, 0, MAX_VISIBILITY_S)
        elif key == "delay":
            values[key] = number(value, key, 0, MAX_DELAY_S)
        elif key == "retention":
            values[key] = number(value, key, MIN_RETENTION_S, MAX_RETENTION_S)
        elif key == "max_message_bytes":
            values[key] = integer(value, key, MIN_MESSAGE_BYTES, MAX_MESSAGE_BYTES)
        elif key == "max_depth":
            values[key] = None if value is None else integer(value, key, 1, MAX_DEPTH_LIMIT)
        elif key == "content_dedup":
            if not isinstance(value, bool):
                raise InvalidRequest("'content_dedup' must be a boolean")
            if value and not fifo:
                raise InvalidRequest("'content_dedup' is only for fifo queues")
            values[key] = value
        elif key == "dead_letter":
            values[key] = _dead_letter(name, value)
    return QueueAttrs(**values)


def _dead_letter(name: str, value: object) -> DeadLetter | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"queue", "max_receive_count"}:
        raise InvalidRequest('\'dead_letter\' must be {"queue": name, "max_receive_count": n}')
    dlq = validate_name(value["queue"])
    if dlq == name:
        raise InvalidRequest("a queue cannot be its own dead-letter queue")
    if is_fifo_name(dlq) != is_fifo_name(name):
        raise InvalidRequest("the dead-letter queue of a fifo queue must be fifo, and vice versa")
    count = integer(value["max_receive_count"], "max_receive_count", 1, MAX_RECEIVE_COUNT)
    return DeadLetter(dlq, count)


@dataclass(frozen=True, slots=True)
class Entry:
    """A validated message to enqueue; `payload` is the stored `{body, attributes}` JSON."""

    id: str
    payload: bytes
    priority: int
    delay: int | float | None  # None: the queue's default
    group_id: str | None
    dedup_id: str | None
    content_hash: str | None  # used as dedup id when the queue has content_dedup


def new_message_id() -> str:
    return uuid.uuid4().hex


def prepare_entry(queue: str, entry: object) -> Entry:
    """Validate one send entry for `queue` (size limits are checked by the store)."""
    if not isinstance(entry, Mapping):
        raise InvalidRequest("a message entry must be a JSON object")
    # Refuse at send what could never be received: unencodable text, NaN, or a body
    # too deep to wrap in a receive reply (orjson stops at 255 levels).
    check_fields(entry)
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise InvalidRequest(f"unknown message fields: {', '.join(sorted(map(str, unknown)))}")
    if "body" not in entry:
        raise InvalidRequest("'body' is required")
    attributes = _attributes(entry.get("attributes"))
    delay = entry.get("delay")
    delay = None if delay is None else number(delay, "delay", 0, MAX_DELAY_S)
    priority = integer(entry.get("priority", 0) or 0, "priority", 0, MAX_PRIORITY)
    dedup_id = _token(entry.get("dedup_id"), "dedup_id")
    group_id = _token(entry.get("group_id"), "group_id")
    fifo = is_fifo_name(queue)
    if fifo and group_id is None:
        raise InvalidRequest("'group_id' is required on fifo queues")
    if not fifo and group_id is not None:
        raise InvalidRequest("'group_id' is only for fifo queues")
    if fifo and priority:
        # Order within a group is send order; a priority would contradict it.
        raise InvalidRequest("'priority' is not supported on fifo queues")
    try:
        body = orjson.dumps(entry["body"])
        payload = orjson.dumps({"body": orjson.Fragment(body), "attributes": attributes})
    except TypeError as exc:
        raise InvalidRequest(f"body is not JSON-encodable: {exc}") from None
    content_hash = hashlib.sha256(body).hexdigest() if fifo else None
    return Entry(new_message_id(), payload, priority, delay, group_id, dedup_id, content_hash)


def _attributes(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest("'attributes' must be an object")
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > 256:
            raise InvalidRequest("attribute names must be strings of 1 to 256 characters")
        items = item if isinstance(item, list) else [item]
        if not all(isinstance(v, str | int | float | bool) for v in items):
            raise InvalidRequest(f"attribute {key!r} must be a string, number or boolean")
    return dict(value)


def _token(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
        raise InvalidRequest(f"'{field}' must be 1 to {MAX_TOKEN_CHARS} printable ASCII characters")
    return value


def decode_payload(payload: bytes | str) -> tuple[Any, dict[str, Any]]:
    data = orjson.loads(payload)
    return data["body"], data.get("attributes") or {}


# Receipts are "<message id>.<token>": the id locates the message without a lookup
# table, the token (fresh per receive) is what makes older receipts invalid.
def new_receipt_base() -> str:
    return secrets.token_hex(6)


def split_receipt(receipt: object) -> tuple[str, str]:
    """(message id, token) of a receipt, or `ReceiptInvalid` when malformed."""
    if not isinstance(receipt, str) or len(receipt) > 200:
        raise ReceiptInvalid("malformed receipt")
    msg_id, sep, token = receipt.rpartition(".")
    if not sep or not msg_id or not token:
        raise ReceiptInvalid("malformed receipt", details={"receipt": receipt})
    return msg_id, token


def receipt_error(
    receipt: str, message: str = "receipt is not the latest of an existing message"
) -> dict[str, Any]:
    return {"receipt": receipt, "error": ReceiptInvalid(message).to_dict()}


def empty_stats() -> dict[str, Any]:
    return {
        "visible": 0,
        "in_flight": 0,
        "delayed": 0,
        "oldest_age_s": 0.0,
        "sent_total": 0,
        "received_total": 0,
        "deleted_total": 0,
        "dead_lettered_total": 0,
    }

"""SNS-style delivery of topic messages to queues (the `sqs` protocol of the SNS API).

A topic→queue subscription created through the SNS API carries `options`: the
SNS subscription attributes plus the ARNs the envelope names. Such a subscription
delivers the SNS JSON envelope (or, with RawMessageDelivery, the bare message) and
filters on attributes or on the message body (FilterPolicyScope).

Typed attributes travel in reserved attribute names, which AWS clients cannot send
themselves (names starting with `AWS.` are reserved by SQS and SNS):

- `AWS.DataTypes` on a queue message: JSON `{name: DataType}` for every attribute
  whose SQS DataType is not plain `String` (Binary values are base64 text);
- `AWS.SNS` on a topic message published through SNS: JSON with `Subject`,
  `Types` (non-String DataTypes), `Numbers` (the exact text of Number values
  when it differs from the parsed number), `GroupId` and `DedupId`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from fanout.message import Message
from shared.filters import FilterPolicy

DATA_TYPES = "AWS.DataTypes"
# An SQS/SNS DataType, and a FIFO group or dedup id (printable ASCII, as the store wants).
DATA_TYPE = re.compile(r"(String|Number|Binary)(\.[!-~]{1,250})?")
TOKEN = re.compile(r"[!-~]{1,128}")
SNS_META = "AWS.SNS"
RESERVED = (DATA_TYPES, SNS_META)


def user_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes without the reserved type carriers."""
    return {k: v for k, v in attributes.items() if k not in RESERVED}


def reserved_json(attributes: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The JSON object a reserved attribute carries; anything else (a native publisher
    may set these names too) reads as empty."""
    raw = attributes.get(key)
    if not isinstance(raw, str):
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def data_types(value: object) -> dict[str, str]:
    """The well-formed `{name: DataType}` entries of a types map."""
    if not isinstance(value, Mapping):
        return {}
    return {
        k: v
        for k, v in value.items()
        if isinstance(k, str) and isinstance(v, str) and DATA_TYPE.fullmatch(v)
    }


def sns_meta(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The `AWS.SNS` meta of a topic message, with only well-formed fields kept."""
    raw = reserved_json(attributes, SNS_META)
    meta: dict[str, Any] = {"Types": data_types(raw.get("Types"))}
    numbers = raw.get("Numbers")
    if isinstance(numbers, Mapping):
        meta["Numbers"] = {
            k: v for k, v in numbers.items() if isinstance(k, str) and isinstance(v, str)
        }
    if isinstance(raw.get("Subject"), str):
        meta["Subject"] = raw["Subject"]
    for key in ("GroupId", "DedupId"):
        # They become FIFO group and dedup ids: the queue store's token rules apply.
        if isinstance(raw.get(key), str) and TOKEN.fullmatch(raw[key]):
            meta[key] = raw[key]
    return meta


def number_text(value: int | float) -> str:
    return str(value) if isinstance(value, int) or not value.is_integer() else str(int(value))


def typed_attributes(attributes: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """`{name: (DataType, text)}` of a topic message's attributes, as SNS shows them."""
    meta = sns_meta(attributes)
    types: dict[str, str] = meta.get("Types") or {}
    numbers: dict[str, str] = meta.get("Numbers") or {}
    out: dict[str, tuple[str, str]] = {}
    for name, value in user_attributes(attributes).items():
        if isinstance(value, bool):
            out[name] = (types.get(name, "String"), "true" if value else "false")
        elif isinstance(value, int | float):
            out[name] = (types.get(name, "Number"), numbers.get(name, number_text(value)))
        elif isinstance(value, list):
            out[name] = (types.get(name, "String.Array"), orjson.dumps(value).decode())
        else:
            out[name] = (types.get(name, "String"), str(value))
    return out


MAX_FLATTEN_DEPTH = 32


def flatten(value: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Nested objects as dotted keys: how a MessageBody filter policy sees a body.

    Below MAX_FLATTEN_DEPTH levels an object stays whole (no filter matches it), so a
    hostile, deeply nested body costs bounded work and never exhausts the stack.
    """
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        # Filter operators such as {"prefix": "x"} sit inside lists, so in a policy
        # as in a body every mapping value is one more level of nesting.
        if isinstance(item, Mapping) and depth < MAX_FLATTEN_DEPTH:
            out.update(flatten(item, name + ".", depth + 1))
        else:
            out[name] = item
    return out


def _message_text(data: Any) -> str:
    return data if isinstance(data, str) else orjson.dumps(data).decode()


def _iso(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms / 1000)) + (f".{ts_ms % 1000:03d}Z")


class SnsMessage:
    """What every SNS delivery of one topic message needs, decoded once per message."""

    __slots__ = ("_flat", "body", "meta", "msg", "text", "typed", "user")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        data = orjson.loads(msg.envelope).get("data")
        self.text = _message_text(data)
        try:
            self.body = orjson.loads(data) if isinstance(data, str) else data
        except orjson.JSONDecodeError:
            self.body = None
        self.meta = sns_meta(msg.attributes)
        self.typed = typed_attributes(msg.attributes)
        self.user = user_attributes(msg.attributes)
        self._flat: dict[str, Any] | None = None

    def flat_body(self) -> dict[str, Any] | None:
        """The body as a MessageBody filter sees it; None when it is not an object."""
        if self._flat is None and isinstance(self.body, Mapping):
            self._flat = flatten(self.body)
        return self._flat


def sns_delivery(
    sns: SnsMessage, options: Mapping[str, Any], flt: FilterPolicy
) -> tuple[bytes, str | None, str | None] | None:
    """The queue payload, group id and dedup id for a message, or None when filtered out."""
    attrs: Mapping[str, Any] = options.get("attributes") or {}
    if attrs.get("FilterPolicyScope") == "MessageBody":
        flat = sns.flat_body()
        if not flt.match_all and (flat is None or not flt.matches(flat)):
            return None
    elif not flt.matches(sns.user):
        return None
    meta, typed, text, msg = sns.meta, sns.typed, sns.text, sns.msg
    if attrs.get("RawMessageDelivery", "false").lower() == "true":
        values: dict[str, Any] = {name: value for name, (_, value) in typed.items()}
        kinds = {name: kind for name, (kind, _) in typed.items() if kind != "String"}
        if kinds:
            values[DATA_TYPES] = orjson.dumps(kinds).decode()
        body_text = text
    else:
        values = {}
        envelope: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": msg.id,
            "TopicArn": options.get("topic_arn", ""),
        }
        if meta.get("Subject"):
            envelope["Subject"] = meta["Subject"]
        envelope.update(
            {
                "Message": text,
                "Timestamp": _iso(msg.ts),
                "SignatureVersion": "1",
                "Signature": "",
                "SigningCertURL": "",
                "UnsubscribeURL": options.get("unsubscribe_url", ""),
            }
        )
        if typed:
            envelope["MessageAttributes"] = {
                name: {"Type": kind, "Value": value} for name, (kind, value) in typed.items()
            }
        body_text = orjson.dumps(envelope).decode()
    payload = orjson.dumps({"body": body_text, "attributes": values})
    return payload, meta.get("GroupId"), meta.get("DedupId")

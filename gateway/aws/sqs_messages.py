"""SQS messages and parameters: validation, the stored form of attributes, batches.

Pure functions shared by both SQS protocols (`sqs`, `sqs_query`): what a valid send,
batch and receipt handle is, and how SQS MessageAttributes map onto Herald attributes.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from fanout.queues.model import split_receipt
from fanout.queues.sns_delivery import DATA_TYPE, DATA_TYPES, RESERVED, data_types, reserved_json
from gateway.aws.errors import AwsError, invalid, missing
from gateway.aws.md5 import md5_of_attributes, md5_of_body
from shared.config import AwsCredential
from shared.errors import ReceiptInvalid

MAX_BATCH = 10
MAX_ATTRIBUTES = 10
MAX_BATCH_BYTES = 262_144

# An attribute as the MD5 sees it: (DataType, text or Binary bytes).
Typed = tuple[str, str | bytes]

_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_ATTR_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
# Characters SQS accepts in a body: #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF.
_BAD_BODY = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request and where it came in (queue URLs are built from it)."""

    access_key: str
    credential: AwsCredential | None  # None: dev mode, everything allowed
    base_url: str  # e.g. http://host:8080 or http://host:8080/aws

    def may_use_queue(self, name: str) -> bool:
        return self.credential is None or any(
            fnmatch.fnmatchcase(name, p) for p in self.credential.queues
        )

    def check_queue(self, name: str) -> None:
        if not self.may_use_queue(name):
            raise AwsError("AccessDenied", f"Access to the resource {name} is denied.", status=403)


def param_str(params: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = params.get(key)
    if value is None:
        if required:
            raise missing(key)
        return None
    if not isinstance(value, str):
        raise invalid(f"Value for parameter {key} must be a string.")
    return value


def param_int(params: Mapping[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise invalid(
            f"Value {value} for parameter {key} is invalid. Reason: must be between {lo} and {hi}."
        )
    return value


def param_list(params: Mapping[str, Any], key: str) -> list[Any]:
    value = params.get(key) or []
    if not isinstance(value, list):
        raise invalid(f"Value for parameter {key} must be a list.")
    return value


def param_strings(params: Mapping[str, Any], key: str) -> list[str]:
    values = param_list(params, key)
    if not all(isinstance(v, str) for v in values):
        raise invalid(f"Value for parameter {key} must be a list of strings.")
    return values


def param_map(params: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = params.get(key) or {}
    if not isinstance(value, dict):
        raise invalid(f"Value for parameter {key} must be a map.")
    return value


def message_attributes(raw: object) -> tuple[dict[str, Any], dict[str, Typed]]:
    """Validated MessageAttributes as (stored attributes, md5 input)."""
    if not raw:
        return {}, {}
    if not isinstance(raw, dict) or len(raw) > MAX_ATTRIBUTES:
        raise invalid(
            f"Number of message attributes [{len(raw) if isinstance(raw, dict) else 0}] "
            f"exceeds the allowed maximum [{MAX_ATTRIBUTES}]."
        )
    stored: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    md5_in: dict[str, Typed] = {}
    for name, value in raw.items():
        if (
            _ATTR_NAME.fullmatch(name) is None
            or ".." in name
            or name.startswith(".")
            or name.endswith(".")
            or name.lower().startswith(("aws.", "amazon."))
        ):
            raise invalid(f"Message attribute name '{name}' is invalid.")
        if not isinstance(value, dict):
            raise invalid(f"The message attribute '{name}' must be a structure.")
        kind = value.get("DataType")
        if not isinstance(kind, str) or DATA_TYPE.fullmatch(kind) is None:
            raise invalid(f"The message attribute '{name}' has an invalid message attribute type.")
        if kind.startswith("Binary"):
            blob = value.get("BinaryValue")
            if not isinstance(blob, str) or not blob:
                raise invalid(f"The message attribute '{name}' must contain a non-empty value.")
            try:
                data = base64.b64decode(blob, validate=True)
            except binascii.Error:
                raise invalid(f"The message attribute '{name}' has invalid Binary.") from None
            stored[name] = blob
            md5_in[name] = (kind, data)
        else:
            text = value.get("StringValue")
            if not isinstance(text, str) or not text:
                raise invalid(
                    f"The message attribute '{name}' must contain a non-empty value "
                    f"of message attribute type '{kind}'."
                )
            if kind.startswith("Number"):
                try:
                    float(text)
                except ValueError:
                    raise invalid(
                        f"Can't cast the value of message (user) attribute '{name}' to a number."
                    ) from None
            stored[name] = text
            md5_in[name] = (kind, text)
        if kind != "String":
            kinds[name] = kind
    if kinds:
        stored[DATA_TYPES] = orjson.dumps(kinds).decode()
    return stored, md5_in


def prepare_send(
    name: str, info: Mapping[str, Any], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """A send (one SendMessage or one batch entry) as a Herald entry plus its digests."""
    body = params.get("MessageBody")
    if not isinstance(body, str) or not body:
        raise missing("MessageBody")
    if _BAD_BODY.search(body):
        raise AwsError("InvalidMessageContents", "Invalid characters found. Deleted message body.")
    stored, md5_in = message_attributes(params.get("MessageAttributes"))
    size = len(body.encode()) + sum(
        len(k) + len(v[0]) + len(v[1] if isinstance(v[1], bytes) else v[1].encode())
        for k, v in md5_in.items()
    )
    if size > info["max_message_bytes"]:
        raise invalid(
            "One or more parameters are invalid. Reason: Message must be shorter than "
            f"{info['max_message_bytes']} bytes."
        )
    fifo = name.endswith(".fifo")
    entry: dict[str, Any] = {"body": body}
    if stored:
        entry["attributes"] = stored
    delay = param_int(params, "DelaySeconds", 0, 900)
    group = params.get("MessageGroupId")
    dedup = params.get("MessageDeduplicationId")
    if fifo:
        if delay is not None:
            raise invalid(
                f"Value {delay} for parameter DelaySeconds is invalid. Reason: "
                "The request include parameter that is not valid for this queue type."
            )
        if group is None:
            raise missing("MessageGroupId")
        if dedup is None and not info.get("content_dedup"):
            raise invalid(
                "The queue should either have ContentBasedDeduplication enabled or "
                "MessageDeduplicationId provided explicitly"
            )
        entry["group_id"] = group
        if dedup is not None:
            entry["dedup_id"] = dedup
    else:
        if delay is not None:
            entry["delay"] = delay
        # Standard queues ignore MessageGroupId (fair queues) and
        # MessageDeduplicationId, as SQS does; Herald drops both.
    digests = {"MD5OfMessageBody": md5_of_body(body)}
    if md5_in:
        digests["MD5OfMessageAttributes"] = md5_of_attributes(md5_in)
    return entry, digests


def message_id(herald_id: str) -> str:
    """Herald's 32-hex ids shown as UUIDs, as SQS shows message ids."""
    if len(herald_id) == 32:
        try:
            return str(uuid.UUID(hex=herald_id))
        except ValueError:
            pass
    return herald_id


def check_receipt(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise missing("ReceiptHandle")
    try:
        split_receipt(value)
    except ReceiptInvalid:
        raise AwsError(
            "ReceiptHandleIsInvalid", f'The input receipt handle "{value}" is not a valid one.'
        ) from None
    return value


def batch_entries(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `Entries` of a batch call, checked as SQS checks them."""
    entries = params.get("Entries")
    if not entries:
        raise AwsError(
            "EmptyBatchRequest", "There should be at least one SendMessageBatchRequestEntry."
        )
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise invalid("Entries must be a list of structures.")
    if len(entries) > MAX_BATCH:
        raise AwsError(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are {MAX_BATCH}. You have sent {len(entries)}.",
        )
    ids = [e.get("Id") for e in entries]
    for entry_id in ids:
        if not isinstance(entry_id, str) or _ENTRY_ID.fullmatch(entry_id) is None:
            raise AwsError(
                "InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and "
                "underscores. It can be at most 80 letters long.",
            )
    if len(set(ids)) != len(ids):
        raise AwsError(
            "BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id."
        )
    return entries


def failure(entry_id: str, code: str, message: str) -> dict[str, Any]:
    return {"Id": entry_id, "SenderFault": True, "Code": code, "Message": message}


def typed_attributes(attributes: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Stored attributes as `{name: (DataType, text)}`; native ones get inferred types."""
    kinds = data_types(reserved_json(attributes, DATA_TYPES))
    out: dict[str, tuple[str, str]] = {}
    for name, value in attributes.items():
        if name in RESERVED:
            continue
        if isinstance(value, bool):
            out[name] = (kinds.get(name, "String"), "true" if value else "false")
        elif isinstance(value, int | float):
            out[name] = (kinds.get(name, "Number"), str(value))
        elif isinstance(value, str):
            out[name] = (kinds.get(name, "String"), value)
        else:
            out[name] = (kinds.get(name, "String"), orjson.dumps(value).decode())
        kind, text = out[name]
        if kind.startswith("Binary") and not _is_base64(text):
            # Typed Binary by a native sender without base64 text: show it as text
            # rather than fail every receive of the message.
            out[name] = ("String", text)
    return out


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def wanted(name: str, patterns: set[str]) -> bool:
    if "All" in patterns or ".*" in patterns or name in patterns:
        return True
    return any(p.endswith(".*") and name.startswith(p[:-1]) for p in patterns)

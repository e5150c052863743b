"""The MD5 digests SQS returns, which the SDKs recompute and check."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping


def md5_of_body(body: str) -> str:
    return hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def md5_of_attributes(attributes: Mapping[str, tuple[str, str | bytes]]) -> str:
    """MD5 over `{name: (DataType, value)}`: names sorted, each field length-prefixed.

    String and Number values are text (transport byte 1); Binary values are bytes (2).
    """
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        kind, value = attributes[name]
        digest.update(_field(name.encode()) + _field(kind.encode()))
        if isinstance(value, bytes):
            digest.update(b"\x02" + _field(value))
        else:
            digest.update(b"\x01" + _field(value.encode()))
    return digest.hexdigest()

"""RFC 6455 server-to-client frames, built once and written to many sockets.

Server frames are unmasked, so without permessage-deflate the whole frame (header
and payload) is the same bytes for every socket; building it once per batch is
what makes broadcast cheap (docs/architecture.md).
"""

from __future__ import annotations

import struct

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_FIN = 0x80


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame carrying `payload`."""
    n = len(payload)
    first = _FIN | opcode
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    """A text frame; `payload` must be UTF-8 (orjson output always is)."""
    return frame(OP_TEXT, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with `code` and a reason trimmed to the 123-byte limit."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return frame(OP_CLOSE, body)

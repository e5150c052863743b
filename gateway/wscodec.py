"""Sans-I/O RFC 6455 pieces for the server side: the handshake and a frame parser.

Herald terminates WebSockets itself (see gateway/wsproto.py for why), so this is
the whole codec: bytes in, complete messages out, no sockets and no loop. Server
frames are built by `fanout.framing`.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from fanout.framing import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

_apply_mask: Callable[[bytes, bytes], bytes] | None
try:  # the C helper that websockets ships; a pure-Python fallback keeps us portable
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover
    _apply_mask = None

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# The one application protocol Herald speaks (docs/protocol.md "Subprotocol").
SUBPROTOCOL = "herald.v1"
MAX_HANDSHAKE_BYTES = 16 * 1024
# Empty continuation frames cost memory and CPU without adding payload bytes, so an
# unfinished message is bounded by its frame count too, not only by `max_size`.
MAX_FRAGMENTS = 1024
_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class ProtocolViolation(Exception):
    """The peer broke RFC 6455: close with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        # What `FrameParser.feed` parsed before the violation: handle it, then close.
        self.messages: list[tuple[int, bytes]] = []


def valid_close_code(code: int) -> bool:
    """May a peer send `code`? RFC 6455 7.4.1/7.4.2 and the IANA registry.

    1004 is reserved; 1005, 1006 and 1015 must never be sent; 1016–2999 are
    unassigned; 3000–4999 belong to libraries and applications.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def check_close_payload(payload: bytes) -> None:
    """Raise ProtocolViolation for a close body that RFC 6455 5.5.1 forbids."""
    if not payload:
        return
    if len(payload) == 1:
        raise ProtocolViolation(1002, "close payload of one byte")
    if not valid_close_code(int.from_bytes(payload[:2], "big")):
        raise ProtocolViolation(1002, "invalid close code")
    _check_utf8(payload[2:], "close reason is not UTF-8")


def _check_utf8(data: bytes, reason: str) -> None:
    if not data.isascii():  # the common case costs one C scan and no allocation
        try:
            data.decode()
        except UnicodeDecodeError:
            raise ProtocolViolation(1007, reason) from None


@dataclass(slots=True)
class Handshake:
    """A parsed HTTP upgrade request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    @property
    def key(self) -> str | None:
        return self.headers.get("sec-websocket-key")

    @property
    def subprotocols(self) -> list[str]:
        """What the client offers in Sec-WebSocket-Protocol, in its order."""
        offered = self.headers.get("sec-websocket-protocol", "")
        return [p for p in (part.strip() for part in offered.split(",")) if p]

    def is_websocket_upgrade(self) -> bool:
        upgrade = self.headers.get("upgrade", "").lower()
        connection = self.headers.get("connection", "").lower()
        return upgrade == "websocket" and "upgrade" in connection

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def parse_handshake(raw: bytes) -> Handshake:
    """Parse the request head (everything before the blank line)."""
    try:
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise ProtocolViolation(1002, "malformed handshake") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolViolation(1002, "malformed header")
        name = name.strip().lower()
        value = value.strip()
        # A repeated header is one comma-separated list (RFC 9110 5.3), e.g. two
        # Sec-WebSocket-Protocol lines.
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    url = urlsplit(target)
    return Handshake(method, url.path, parse_qs(url.query), headers)


def accept_value(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def response_101(key: str, subprotocol: str | None = None) -> bytes:
    # No Sec-WebSocket-Extensions: permessage-deflate would make every socket's
    # frames different and defeat frame-once broadcast (docs/architecture.md).
    protocol = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_value(key)}\r\n{protocol}\r\n"
    ).encode()


def http_error(status: int, reason: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    ).encode() + body


def unmask(payload: bytes, mask: bytes) -> bytes:
    if _apply_mask is not None:
        return bytes(_apply_mask(payload, mask))
    n = len(payload)
    if not n:
        return payload
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")


class FrameParser:
    """Client frames in, whole messages and control frames out.

    Yields `(opcode, payload)`; fragmented messages are joined and reported with
    their first opcode. Enforces masking, opcodes, control-frame and close-frame
    rules, UTF-8 of text (fragments are checked as they arrive, so a bad message
    fails fast), `max_size` and `max_fragments`. After a violation the parser is
    spent: the caller must fail the connection (RFC 6455 7.1.7).
    """

    __slots__ = (
        "_buf",
        "_frag",
        "_frag_op",
        "_frag_size",
        "_utf8",
        "max_fragments",
        "max_size",
    )

    def __init__(self, max_size: int, max_fragments: int = MAX_FRAGMENTS) -> None:
        self.max_size = max_size
        self.max_fragments = max_fragments
        self._buf = bytearray()
        self._frag: list[bytes] | None = None
        self._frag_op = 0
        self._frag_size = 0
        self._utf8: codecs.IncrementalDecoder | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Parse what `data` completes; raise ProtocolViolation (with `.messages`)."""
        out: list[tuple[int, bytes]] = []
        try:
            self._parse(data, out)
        except ProtocolViolation as exc:
            exc.messages = out
            self._buf = bytearray()
            self._frag = self._utf8 = None
            raise
        return out

    def _parse(self, data: bytes, out: list[tuple[int, bytes]]) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                if b0 & 0x70:
                    raise ProtocolViolation(1002, "reserved bits set (no extension negotiated)")
                if not b1 & 0x80:
                    raise ProtocolViolation(1002, "client frames must be masked")
                opcode = b0 & 0x0F
                if opcode not in _OPCODES:
                    raise ProtocolViolation(1002, f"reserved opcode {opcode:#x}")
                n = b1 & 0x7F
                head = 2
                if n == 126:
                    if end - pos < 4:
                        break
                    n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                    head = 4
                elif n == 127:
                    if end - pos < 10:
                        break
                    n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                    head = 10
                fin = b0 & 0x80
                if opcode >= 0x8 and (not fin or n > 125):
                    raise ProtocolViolation(1002, "control frames must be final and short")
                if n > self.max_size or self._frag_size + n > self.max_size:
                    raise ProtocolViolation(1009, "message too big")
                start = pos + head + 4
                if end - start < n:
                    break
                payload = unmask(bytes(buf[start : start + n]), bytes(buf[pos + head : start]))
                pos = start + n
                if opcode >= 0x8:
                    if opcode == OP_CLOSE:
                        check_close_payload(payload)
                    out.append((opcode, payload))
                elif opcode == OP_CONT:
                    self._continue(payload, fin, out)
                else:
                    self._start(opcode, payload, fin, out)
        finally:
            if pos:
                del buf[:pos]

    def _start(self, opcode: int, payload: bytes, fin: int, out: list[tuple[int, bytes]]) -> None:
        if self._frag is not None:
            raise ProtocolViolation(1002, "new message inside a fragmented one")
        if fin:
            if opcode == OP_TEXT:
                _check_utf8(payload, "text frame is not UTF-8")
            out.append((opcode, payload))
            return
        self._frag, self._frag_op, self._frag_size = [payload], opcode, len(payload)
        if opcode == OP_TEXT:
            self._utf8 = _Utf8Decoder()
            self._decode(payload, False)

    def _continue(self, payload: bytes, fin: int, out: list[tuple[int, bytes]]) -> None:
        frag = self._frag
        if frag is None:
            raise ProtocolViolation(1002, "continuation without a first frame")
        if len(frag) >= self.max_fragments:
            raise ProtocolViolation(1009, "too many fragments in one message")
        frag.append(payload)
        self._frag_size += len(payload)
        if self._utf8 is not None:
            self._decode(payload, bool(fin))
        if fin:
            out.append((self._frag_op, b"".join(frag)))
            self._frag, self._frag_size, self._utf8 = None, 0, None

    def _decode(self, payload: bytes, final: bool) -> None:
        assert self._utf8 is not None
        try:
            self._utf8.decode(payload, final)
        except UnicodeDecodeError:
            raise ProtocolViolation(1007, "text message is not UTF-8") from None

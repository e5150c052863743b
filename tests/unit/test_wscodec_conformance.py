"""RFC 6455 rules the frame parser enforces beyond framing: UTF-8, opcodes, close
bodies and the cost of an unfinished fragmented message (issue 9)."""

from __future__ import annotations

import struct

import pytest

from fanout.framing import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT
from gateway.wscodec import (
    MAX_FRAGMENTS,
    FrameParser,
    ProtocolViolation,
    parse_handshake,
    response_101,
)
from wsclient import client_frame

BAD_UTF8 = "κόσμε".encode() + b"\xed\xa0\x80edited"  # a UTF-16 surrogate, encoded


def violation(parser: FrameParser, data: bytes) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        parser.feed(data)
    return info.value


def close_body(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def test_text_frame_must_be_utf8() -> None:
    assert violation(FrameParser(1 << 20), client_frame(OP_TEXT, BAD_UTF8)).code == 1007


def test_binary_frame_is_not_utf8_checked() -> None:
    assert FrameParser(1 << 20).feed(client_frame(OP_BINARY, BAD_UTF8)) == [(OP_BINARY, BAD_UTF8)]


def test_fragmented_text_fails_fast_on_the_bad_fragment() -> None:
    p = FrameParser(1 << 20)
    assert p.feed(client_frame(OP_TEXT, b"ok", fin=False)) == []
    # The message is unfinished, yet the second fragment already cannot be UTF-8.
    assert violation(p, client_frame(OP_CONT, b"\xff", fin=False)).code == 1007


def test_code_point_split_across_fragments_is_valid() -> None:
    snow = "☃".encode()
    p = FrameParser(1 << 20)
    data = client_frame(OP_TEXT, snow[:1], fin=False) + client_frame(OP_CONT, snow[1:])
    assert p.feed(data) == [(OP_TEXT, snow)]


def test_text_message_ending_inside_a_code_point_is_refused() -> None:
    data = client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_CONT, "☃".encode()[:2])
    assert violation(FrameParser(1 << 20), data).code == 1007


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_fail_with_1002(opcode: int) -> None:
    assert violation(FrameParser(1 << 20), client_frame(opcode, b"")).code == 1002


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
def test_reserved_bits_fail_with_1002(rsv: int) -> None:
    data = bytearray(client_frame(OP_TEXT, b"x"))
    data[0] |= rsv
    assert violation(FrameParser(1 << 20), bytes(data)).code == 1002


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000])
def test_invalid_close_codes_fail_with_1002(code: int) -> None:
    data = client_frame(OP_CLOSE, close_body(code))
    assert violation(FrameParser(1 << 20), data).code == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4999])
def test_valid_close_codes_pass(code: int) -> None:
    body = close_body(code, "bye ☃".encode())
    assert FrameParser(1 << 20).feed(client_frame(OP_CLOSE, body)) == [(OP_CLOSE, body)]


def test_empty_close_passes_and_one_byte_close_fails() -> None:
    assert FrameParser(1 << 20).feed(client_frame(OP_CLOSE, b"")) == [(OP_CLOSE, b"")]
    assert violation(FrameParser(1 << 20), client_frame(OP_CLOSE, b"\x03")).code == 1002


def test_close_reason_must_be_utf8() -> None:
    data = client_frame(OP_CLOSE, close_body(1000, BAD_UTF8))
    assert violation(FrameParser(1 << 20), data).code == 1007


@pytest.mark.parametrize(
    "data",
    [
        client_frame(OP_PING, b"x" * 126),
        client_frame(OP_CLOSE, close_body(1000, b"x" * 124)),
        client_frame(OP_PING, b"x", fin=False),
        client_frame(OP_CLOSE, close_body(1000), fin=False),
    ],
)
def test_control_frames_must_be_short_and_final(data: bytes) -> None:
    assert violation(FrameParser(1 << 20), data).code == 1002


def test_unfinished_message_is_bounded_by_frame_count() -> None:
    """Empty continuations add no payload bytes; they must still hit a limit."""
    p = FrameParser(1 << 20)
    p.feed(client_frame(OP_TEXT, b"", fin=False))
    empty = client_frame(OP_CONT, b"", fin=False)
    p.feed(empty * (MAX_FRAGMENTS - 1))  # the whole message so far: MAX_FRAGMENTS frames
    assert violation(p, empty).code == 1009


def test_message_of_max_fragments_frames_is_accepted() -> None:
    p = FrameParser(1 << 20)
    data = client_frame(OP_TEXT, b"a", fin=False)
    data += client_frame(OP_CONT, b"a", fin=False) * (MAX_FRAGMENTS - 2)
    data += client_frame(OP_CONT, b"a")
    assert p.feed(data) == [(OP_TEXT, b"a" * MAX_FRAGMENTS)]


def test_messages_before_a_violation_are_reported() -> None:
    data = client_frame(OP_TEXT, b"hello") + client_frame(0x5, b"") + client_frame(OP_PING, b"")
    exc = violation(FrameParser(1 << 20), data)
    assert exc.code == 1002 and exc.messages == [(OP_TEXT, b"hello")]


def test_subprotocols_from_one_or_repeated_headers() -> None:
    hs = parse_handshake(
        b"GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: chat, herald.v1\r\n"
        b"Sec-WebSocket-Protocol: mqtt\r\n"
    )
    assert hs.subprotocols == ["chat", "herald.v1", "mqtt"]
    assert parse_handshake(b"GET /ws HTTP/1.1\r\nHost: h\r\n").subprotocols == []


def test_101_names_the_selected_subprotocol() -> None:
    assert b"\r\nSec-WebSocket-Protocol: herald.v1\r\n\r\n" in response_101("k", "herald.v1")
    assert b"Sec-WebSocket-Protocol" not in response_101("k")

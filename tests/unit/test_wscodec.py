"""The server-side RFC 6455 codec, fed bytes directly."""

from __future__ import annotations

import os

import pytest

from fanout.framing import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT
from gateway.wscodec import FrameParser, ProtocolViolation, accept_value, parse_handshake
from wsclient import client_frame


def test_rfc_accept_example() -> None:
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_parsing() -> None:
    hs = parse_handshake(
        b"GET /ws?token=abc&x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\n"
    )
    assert hs.path == "/ws" and hs.query_value("token") == "abc"
    assert hs.is_websocket_upgrade() and hs.key == "k"


@pytest.mark.parametrize("size", [0, 5, 125, 126, 70_000])
def test_parses_masked_frames_of_every_length_encoding(size: int) -> None:
    p = FrameParser(1 << 20)
    payload = os.urandom(size)
    assert p.feed(client_frame(OP_BINARY, payload)) == [(OP_BINARY, payload)]


def test_byte_by_byte_feeding_and_several_frames_per_chunk() -> None:
    p = FrameParser(1 << 20)
    data = client_frame(OP_TEXT, b"hello") + client_frame(OP_PING, b"p")
    out = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1])
    assert out == [(OP_TEXT, b"hello"), (OP_PING, b"p")]
    assert FrameParser(100).feed(data) == out


def test_fragments_are_joined_and_control_frames_may_interleave() -> None:
    p = FrameParser(1 << 20)
    data = (
        client_frame(OP_TEXT, b"he", fin=False)
        + client_frame(OP_PING, b"")
        + client_frame(OP_CONT, b"llo")
    )
    assert p.feed(data) == [(OP_PING, b""), (OP_TEXT, b"hello")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(OP_TEXT, b"x", mask=False), 1002),
        (client_frame(OP_CONT, b"x"), 1002),
        (client_frame(OP_PING, b"x", fin=False), 1002),
        (client_frame(OP_CLOSE, b"x" * 126), 1002),
        (client_frame(0x3, b"x"), 1002),
        (bytes((0xC1, 0x80)) + b"\0\0\0\0", 1002),  # RSV1 without an extension
        (client_frame(OP_TEXT, b"x" * 101), 1009),
        (client_frame(OP_TEXT, b"x" * 60, fin=False) + client_frame(OP_CONT, b"x" * 60), 1009),
        (client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"), 1002),
    ],
)
def test_protocol_violations(data: bytes, code: int) -> None:
    with pytest.raises(ProtocolViolation) as info:
        FrameParser(100).feed(data)
    assert info.value.code == code

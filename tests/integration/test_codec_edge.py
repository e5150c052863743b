"""The codec's close codes through a real `herald serve` edge (issue 9)."""

from __future__ import annotations

import struct

import pytest

from fanout.framing import OP_CLOSE, OP_CONT, OP_TEXT
from gateway.wscodec import MAX_FRAGMENTS
from procs import HeraldServer
from wsclient import RawClient, client_frame, close_code

pytestmark = pytest.mark.integration

PING = client_frame(OP_TEXT, b'{"op":"ping","id":7}')


def exchange(server: HeraldServer, data: bytes) -> list[tuple[int, bytes]]:
    client = RawClient(server.port)
    try:
        assert client.status == 101
        client.sock.sendall(data)
        return client.read_frames(timeout=10)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(client_frame(OP_TEXT, b'{"op":"ping","x":"\xff"}'), 1007, id="text-not-utf8"),
        pytest.param(client_frame(0xB, b""), 1002, id="reserved-opcode"),
        pytest.param(client_frame(OP_CLOSE, struct.pack("!H", 1005)), 1002, id="close-1005"),
        pytest.param(client_frame(OP_CLOSE, b"\x03"), 1002, id="close-one-byte"),
        pytest.param(client_frame(OP_CLOSE, b"\x03\xe8\xff"), 1007, id="close-reason-not-utf8"),
        pytest.param(client_frame(OP_CLOSE, struct.pack("!H", 4000)), 4000, id="close-echoed"),
        pytest.param(
            client_frame(OP_TEXT, b"", fin=False)
            + client_frame(OP_CONT, b"", fin=False) * (MAX_FRAGMENTS + 50),
            1009,
            id="empty-continuation-flood",
        ),
    ],
)
def test_violations_close_with_their_code(server: HeraldServer, data: bytes, code: int) -> None:
    assert close_code(exchange(server, data)) == code


def test_a_command_before_a_bad_frame_is_still_answered(server: HeraldServer) -> None:
    frames = exchange(server, PING + client_frame(0x5, b""))
    assert frames[0] == (OP_TEXT, b'{"op":"pong","id":7}')
    assert close_code(frames) == 1002

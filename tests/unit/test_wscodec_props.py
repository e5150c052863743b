"""Property tests of the frame parser (hypothesis): any split of valid input parses
the same, and any input either parses or raises ProtocolViolation, nothing else."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.framing import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT
from gateway.wscodec import FrameParser, ProtocolViolation
from wsclient import client_frame

# Generation speed varies on a shared CI machine: a slow draw is not a failure.
PROPS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
MAX_SIZE = 4096

Frame = tuple[int, bytes, bool]  # opcode, payload, fin
Message = tuple[int, bytes]


def encode(opcode: int, payload: bytes, fin: bool, key: bytes) -> bytes:
    return client_frame(opcode, payload, fin, key=key)


@st.composite
def data_message(draw: st.DrawFn) -> tuple[list[Frame], list[Message]]:
    """One text or binary message, possibly fragmented, with pings/pongs between fragments."""
    if draw(st.booleans()):
        opcode, payload = OP_TEXT, draw(st.text(max_size=200)).encode()
    else:
        opcode, payload = OP_BINARY, draw(st.binary(max_size=300))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    frames: list[Frame] = []
    controls: list[Message] = []
    for i, piece in enumerate(pieces):
        frames.append((opcode if i == 0 else OP_CONT, piece, i == len(pieces) - 1))
        if i < len(pieces) - 1 and draw(st.booleans()):
            ctl = (draw(st.sampled_from([OP_PING, OP_PONG])), draw(st.binary(max_size=125)))
            frames.append((*ctl, True))
            controls.append(ctl)
    # A fragmented message is reported when its last frame arrives, after the controls.
    return frames, [*controls, (opcode, payload)]


@st.composite
def valid_stream(draw: st.DrawFn) -> tuple[bytes, list[Message]]:
    frames: list[Frame] = []
    expected: list[Message] = []
    for f, m in draw(st.lists(data_message(), max_size=5)):
        frames += f
        expected += m
    if draw(st.booleans()):
        reason = draw(st.text(max_size=20)).encode()[:100]
        body = struct.pack("!H", draw(st.sampled_from([1000, 1001, 1011, 3000, 4999]))) + reason
        frames.append((OP_CLOSE, body, True))
        expected.append((OP_CLOSE, body))
    masks = draw(
        st.lists(st.binary(min_size=4, max_size=4), min_size=len(frames), max_size=len(frames))
    )
    data = b"".join(encode(*f, mask) for f, mask in zip(frames, masks, strict=True))
    return data, expected


def feed_split(data: bytes, cuts: list[int]) -> list[Message]:
    parser = FrameParser(MAX_SIZE)
    out: list[Message] = []
    bounds = sorted(c % (len(data) + 1) for c in cuts)
    for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True):
        out += parser.feed(data[a:b])
    return out


@PROPS
@given(valid_stream(), st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_of_valid_input_parses_the_same(
    stream: tuple[bytes, list[Message]], cuts: list[int]
) -> None:
    data, expected = stream
    assert FrameParser(MAX_SIZE).feed(data) == expected
    assert feed_split(data, cuts) == expected


def check_output(messages: list[Message]) -> None:
    for opcode, payload in messages:
        assert opcode in (OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG)
        assert len(payload) <= MAX_SIZE
        if opcode == OP_TEXT:
            payload.decode()  # only valid UTF-8 comes out
        elif opcode != OP_BINARY:
            assert len(payload) <= 125


def feed_all(chunks: list[bytes]) -> None:
    """Feed until the parser accepts everything or refuses with a ProtocolViolation."""
    parser = FrameParser(MAX_SIZE)
    try:
        for chunk in chunks:
            check_output(parser.feed(chunk))
    except ProtocolViolation as exc:
        assert exc.code in (1002, 1007, 1009)
        check_output(exc.messages)


@PROPS
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_parse_or_raise_a_protocol_violation(chunks: list[bytes]) -> None:
    feed_all(chunks)


@PROPS
@given(
    st.lists(
        st.tuples(st.integers(0, 15), st.integers(0, 0xF0), st.binary(max_size=140)), max_size=8
    )
)
def test_masked_frames_with_any_header_bits_parse_or_raise(
    frames: list[tuple[int, int, bytes]],
) -> None:
    # Arbitrary bytes rarely get past the mask bit; here every frame is masked and
    # well-sized, so the opcode, FIN, RSV, UTF-8 and close-body rules are exercised.
    data = b""
    for opcode, flags, payload in frames:
        framed = bytearray(encode(opcode, payload, False, b"\x01\x02\x03\x04"))
        framed[0] |= flags & 0xF0
        data += bytes(framed)
    feed_all([data])


@PROPS
@given(
    valid_stream(),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_corrupted_valid_input_parses_or_raises(
    stream: tuple[bytes, list[Message]], flips: list[tuple[int, int]]
) -> None:
    data = bytearray(stream[0])
    if not data:
        return
    for pos, value in flips:
        data[pos % len(data)] = value
    feed_all([bytes(data)])

"""Client-frame parsing: Herald's hand-written codec vs websockets' sans-I/O protocol.

Decides `docs/architecture.md` "The frame codec". Both parse the same masked client
frames into messages; neither touches a socket. Reported per parser:

- CPU: µs per message for a typical command (one ~90-byte text frame per read, as a
  client sends them), for 64 frames per read (a pipelining client), and for a 3-frame
  fragmented message. Both check UTF-8 and join fragments: the hand-written codec
  itself, ServerProtocol with the few lines Herald would add (websockets does both in
  its connection layer, which Herald would not use);
- memory: bytes held per idle parser in the OPEN state (tracemalloc over 2,000 of
  them), which is what every connection keeps for its lifetime.

    python -m loadtest.codec_bench [--messages 20000]
"""

from __future__ import annotations

import argparse
import codecs
import gc
import os
import struct
import time
import tracemalloc
from collections.abc import Callable

from websockets.frames import Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from fanout.framing import OP_CONT, OP_TEXT
from gateway.wscodec import FrameParser

MAX_SIZE = 1 << 20
COMMAND = b'{"op":"subscribe","id":17,"topic":"game.*.score","filter":{"gameId":["12345"]}}'


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    head = bytes((first, 0x80 | n)) if n < 126 else struct.pack("!BBH", first, 0xFE, n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def herald_parse() -> Callable[[bytes], int]:
    parser = FrameParser(MAX_SIZE)

    def feed(data: bytes) -> int:
        return len(parser.feed(data))

    return feed


def websockets_parse() -> Callable[[bytes], int]:
    """ServerProtocol plus what Herald would add: it neither joins fragments nor
    checks UTF-8 (websockets does both in its connection layer)."""
    protocol = ServerProtocol(state=State.OPEN, max_size=MAX_SIZE)
    parts: list[bytes] = []
    utf8 = codecs.getincrementaldecoder("utf-8")()

    def feed(data: bytes) -> int:
        protocol.receive_data(data)
        protocol.data_to_send()  # pongs / close replies it may have queued
        done = 0
        for event in protocol.events_received():
            if event.opcode in (Opcode.TEXT, Opcode.CONT):
                if event.fin and not parts:
                    if not event.data.isascii():  # the same fast path as Herald's
                        event.data.decode()
                    done += 1
                    continue
                utf8.decode(event.data, event.fin)
                parts.append(event.data)
                if event.fin:
                    b"".join(parts)
                    parts.clear()
                    done += 1
        return done

    return feed


def per_message_us(
    make: Callable[[], Callable[[bytes], int]], reads: list[bytes], per_read: int
) -> float:
    best = float("inf")
    for _ in range(3):
        feed = make()
        gc.collect()
        start = time.perf_counter()
        got = sum(feed(r) for r in reads)
        elapsed = time.perf_counter() - start
        assert got == len(reads) * per_read, (got, len(reads) * per_read)
        best = min(best, elapsed)
    return best / (len(reads) * per_read) * 1e6


def bytes_per_parser(make: Callable[[], object], n: int = 2000) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = [make() for _ in range(n)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return (after - before) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000)
    n = ap.parse_args().messages
    one = client_frame(OP_TEXT, COMMAND)
    fragmented = (
        client_frame(OP_TEXT, COMMAND[:30], fin=False)
        + client_frame(OP_CONT, COMMAND[30:60], fin=False)
        + client_frame(OP_CONT, COMMAND[60:])
    )
    workloads = {
        "1 frame per read": ([one] * n, 1),
        "64 frames per read": ([one * 64] * (n // 64), 64),
        "3-fragment message": ([fragmented] * n, 1),
    }
    parsers = {"hand-written": herald_parse, "websockets ServerProtocol": websockets_parse}
    print(f"{'workload':<22}" + "".join(f"{name:>28}" for name in parsers))
    for label, (reads, per_read) in workloads.items():
        cells = [per_message_us(make, reads, per_read) for make in parsers.values()]
        print(f"{label:<22}" + "".join(f"{c:>25.2f} µs" for c in cells))
    sizes = [
        bytes_per_parser(lambda: FrameParser(MAX_SIZE)),
        bytes_per_parser(lambda: ServerProtocol(state=State.OPEN, max_size=MAX_SIZE)),
    ]
    print(f"{'bytes per idle parser':<22}" + "".join(f"{s:>27.0f} B" for s in sizes))


if __name__ == "__main__":
    main()

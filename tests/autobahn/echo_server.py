"""An echo server on Herald's own WebSocket edge, for Autobahn|Testsuite.

It runs the real `herald serve` stack (uvicorn options, HTTP protocol, handshake,
frame parser, close handling) with one change: a text or binary message is echoed
back instead of being read as a command, which is what the fuzzing client expects.

    python tests/autobahn/echo_server.py PORT
"""

from __future__ import annotations

import sys
import tempfile

import uvicorn

from fanout.framing import OP_BINARY, frame, text_frame
from gateway.server import build_config
from gateway.wsproto import HeraldWebSocket
from shared.config import Settings


class EchoWebSocket(HeraldWebSocket):
    """HeraldWebSocket whose messages are echoed, not parsed as commands."""

    __slots__ = ()

    def _on_text(self, payload: bytes) -> None:
        if self.is_open:
            self.transport.write(text_frame(payload))

    def _on_binary(self, payload: bytes) -> None:
        if self.is_open:
            self.transport.write(frame(OP_BINARY, payload))


def main(port: int) -> None:
    settings = Settings(
        port=port,
        engine="memory",
        data_dir=tempfile.mkdtemp(prefix="herald-autobahn-"),
        # Server pings would be extra frames in the suite's transcripts.
        ping_interval=3600,
        log_level="warning",
    )
    config = build_config(settings)
    config.ws = EchoWebSocket
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main(int(sys.argv[1]))

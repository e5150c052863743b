"""The Edge: what every WebSocket connection of this process shares.

It holds the node, the keep-alive wheel, the command table and the drain state,
so that a connection object stays small (one per socket, see wsproto.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.keepalive import KeepAlive
from shared.ratelimit import TokenBucket

if TYPE_CHECKING:
    from fanout.node import Node
    from gateway.wsproto import HeraldWebSocket

log = logging.getLogger("herald.edge")

Handler = Callable[["HeraldWebSocket", dict[str, Any]], None]


class Edge:
    """Process-wide state of the WebSocket edge."""

    def __init__(self, node: Node, handlers: dict[str, Handler]) -> None:
        self.node = node
        self.handlers = handlers
        self.loop = asyncio.get_running_loop()
        settings = node.settings
        self.keepalive = KeepAlive(settings.ping_interval, settings.ping_timeout)
        self.connection_count = 0
        self.connections_total = 0
        self.background: set[asyncio.Task[None]] = set()
        self._command_rate = settings.command_rate()

    def command_bucket(self) -> TokenBucket | None:
        """A fresh per-connection command limiter, or None when limits are off."""
        if self._command_rate is None:
            return None
        return TokenBucket(*self._command_rate)

    def start(self) -> None:
        self.keepalive.start()

    async def stop(self) -> None:
        await self.keepalive.stop()
        for task in list(self.background):
            task.cancel()

    def connected(self, conn: HeraldWebSocket) -> None:
        self.connection_count += 1
        self.connections_total += 1
        self.keepalive.add(conn)

    def disconnected(self, conn: HeraldWebSocket) -> None:
        self.connection_count -= 1
        self.keepalive.remove(conn)

    def start_drain(self) -> None:
        if not self.node.draining:
            log.warning("draining: telling %d clients to reconnect", self.connection_count)
            self.node.draining = True

"""One timer wheel for every connection's keep-alive (LESSONS: Centrifugo's shared
timer instead of a task per connection).

Connections sit in `interval / tick` buckets; each tick visits one bucket, pings
those that were quiet for an interval, and a FIFO of pong deadlines (the timeout
is constant, so deadlines arrive in order) closes the ones that sent nothing at
all since their ping. Any frame counts as a sign of life, not only a pong: a
client that never answers pings but talks is pinged again once quiet, and dropped
once silent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Protocol


class KeepAliveTarget(Protocol):
    last_seen: float
    ping_sent: float  # 0.0 when no ping is outstanding

    def send_ping(self, now: float) -> None: ...

    def on_dead(self) -> None: ...


class KeepAlive:
    """Pings quiet connections every `interval` and drops those silent for `timeout`."""

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.tick = min(1.0, interval / 5, timeout / 5)
        self._nbuckets = max(1, round(interval / self.tick))
        self._buckets: list[set[KeepAliveTarget]] = [set() for _ in range(self._nbuckets)]
        self._where: dict[KeepAliveTarget, int] = {}
        self._deadlines: deque[tuple[float, float, KeepAliveTarget]] = deque()
        self._cursor = 0
        self._task: asyncio.Task[None] | None = None
        self._next = 0

    def add(self, conn: KeepAliveTarget) -> None:
        i = self._next % self._nbuckets
        self._next += 1
        self._buckets[i].add(conn)
        self._where[conn] = i

    def remove(self, conn: KeepAliveTarget) -> None:
        i = self._where.pop(conn, None)
        if i is not None:
            self._buckets[i].discard(conn)

    def __len__(self) -> int:
        return len(self._where)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            self.step(loop.time())

    def step(self, now: float) -> None:
        """Visit one bucket and expire due pong deadlines (public for tests)."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, sent, conn = deadlines.popleft()
            if conn.ping_sent != sent or conn not in self._where:
                continue  # answered (pong), or gone
            if conn.last_seen < sent:
                # No frame of any kind since the ping: the peer is gone.
                self.remove(conn)
                conn.on_dead()
            else:
                # It sent something else but no pong: it is alive, and liveness never
                # waits on a pong, so ping it again once it falls quiet.
                conn.ping_sent = 0.0
        bucket = self._buckets[self._cursor]
        self._cursor = (self._cursor + 1) % self._nbuckets
        quiet = now - self.interval + self.tick
        for conn in bucket:
            if conn.ping_sent == 0.0 and conn.last_seen <= quiet:
                conn.send_ping(now)
                deadlines.append((now + self.timeout, now, conn))

"""The pod's pub/sub connections: desired channels in, Redis subscriptions kept true.

The backplane says which channels it wants (`add` / `remove`, refcounted); one
task (`_sync_loop`) makes Redis match, in batched SUBSCRIBE / UNSUBSCRIBE commands
(SSUBSCRIBE / SUNSUBSCRIBE grouped per slot on Redis Cluster). Because only that
task talks to Redis and the wanted set lives here, concurrent first subscribers,
subscribe/unsubscribe flapping and reconnects cannot lose a subscription
(the broadcaster library loses concurrent first subscribers; node-redis did not
restore subscriptions after a reconnect).

Each connection is a plain asyncio (buffered) protocol with a hiredis reader:
published payloads are collected per read and handed to the backplane in one
call, without a task switch per message.

Liveness (Centrifugo #1189: health green while the subscriber loop is dead):
every connection is pinged each `PING_INTERVAL_S`; one silent for `DEAD_AFTER_S`
is dropped and reconnected. `healthy()` is False while a connection is lost or a
wanted channel waits longer than `CONFIRM_WITHIN_S` for its subscribe reply.
Reconnects back off from 50 ms to at most 1 s and resubscribe every channel.

Restoring (issue: messages accepted right after a Redis restart were lost): a
channel whose subscription was lost is "restoring" until Redis confirms it again.
`restored()` is False meanwhile, so the pod stays unready and refuses publishes;
`on_lost` and `on_restored` let the backplane hold and replay history topics.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import cast

import hiredis
from redis.crc import key_slot

from fanout.redis.connect import Backoff, stop_tasks
from fanout.redis.wire import encode_command

log = logging.getLogger("herald.redis")

PING_INTERVAL_S = 0.5
DEAD_AFTER_S = 2.0
CONFIRM_WITHIN_S = 1.0
CONNECT_TIMEOUT_S = 1.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0
SUBSCRIBE_BATCH = 1000  # channels per SUBSCRIBE command
READ_BUFFER = 1 << 20

Addr = tuple[str, int]
OnMessages = Callable[[list[tuple[bytes, bytes]]], None]

_PING = b"*1\r\n$4\r\nPING\r\n"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How to open a pub/sub connection (the command client's URL settings)."""

    username: str | None = None
    password: str | None = None
    ssl: ssl.SSLContext | None = None

    def handshake(self) -> bytes:
        if self.password is None:
            return b""
        if self.username:
            return encode_command("AUTH", self.username, self.password)
        return encode_command("AUTH", self.password)


class _Wire(asyncio.BufferedProtocol):
    """One pub/sub connection to one Redis node.

    A buffered protocol reading up to `READ_BUFFER` bytes per event-loop turn:
    under publish overload the loop runs many HTTP handlers per turn, and a small
    read per turn would let the subscriber fall behind until Redis drops it
    (`client-output-buffer-limit pubsub`).
    """

    def __init__(self, listener: Listener, addr: Addr) -> None:
        self.listener = listener
        self.addr = addr
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.alive = False
        self.closing = False
        self.last_reply = 0.0
        self.channels: set[bytes] = set()  # subscribed (or being) on this wire
        self.unsubscribing: dict[bytes, int] = {}  # UNSUBSCRIBEs sent, not answered
        self._loop = asyncio.get_running_loop()
        self._bytes = bytearray(READ_BUFFER)
        self._buffer = memoryview(self._bytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.alive = True
        self.last_reply = self._loop.time()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        reader = self.reader
        reader.feed(cast(bytes, self._bytes), 0, nbytes)  # hiredis copies what it needs
        listener = self.listener
        batch: list[tuple[bytes, bytes]] | None = None
        while True:
            reply = reader.gets()
            if reply is False:
                break
            if type(reply) is list and len(reply) == 3:
                kind = reply[0]
                if kind == b"message" or kind == b"smessage":
                    if batch is None:
                        batch = []
                    batch.append((reply[1], reply[2]))
                elif kind == b"subscribe" or kind == b"ssubscribe":
                    listener._confirmed(self, reply[1])
                elif kind == b"unsubscribe" or kind == b"sunsubscribe":
                    listener._unsubscribed(self, reply[1])
            elif isinstance(reply, hiredis.ReplyError):
                listener._error(self, reply)
        self.last_reply = self._loop.time()
        if batch:
            listener._deliver(batch)

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self.listener._lost(self, exc)

    def send(self, payload: bytes) -> None:
        if self.alive and self.transport is not None:
            self.transport.write(payload)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


class Listener:
    """Keeps this pod's Redis subscriptions equal to the channels it wants."""

    def __init__(self, on_messages: OnMessages) -> None:
        self._on_messages = on_messages
        self._desired: dict[bytes, int] = {}
        self._placed: dict[bytes, _Wire] = {}
        # Wanted channels without a subscribe reply yet, oldest first (readiness).
        self._pending: dict[bytes, float] = {}
        self._sent_at: dict[bytes, float] = {}  # placed, unanswered: when sent
        self._changed: set[bytes] = set()  # channels the sync task must look at
        self._lost_channels: set[bytes] = set()
        self._lost_addrs: set[Addr] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._wires: dict[Addr, _Wire] = {}
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._route: Callable[[bytes], Addr] | None = None
        self._refresh: Callable[[], Awaitable[None]] | None = None
        self._need_refresh = False
        self._sharded = False
        self._endpoint = Endpoint()
        self.on_reconnect: Callable[[], None] | None = None
        self.on_outage: Callable[[], None] | None = None
        # Subscriptions lost (connection, slot move), and all of them back again.
        self.on_lost: Callable[[set[bytes]], None] | None = None
        self.on_restored: Callable[[], None] | None = None
        self._restoring: set[bytes] = set()  # lost, still wanted, not confirmed again
        self._was_restoring = False
        self.reconnects = 0
        self.resubscribes = 0
        self._closed = False

    # ---- configuration and lifecycle ---------------------------------------------

    def configure(
        self,
        *,
        route: Callable[[bytes], Addr],
        endpoint: Endpoint,
        sharded: bool = False,
        refresh: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Where each channel lives (one node, or the slot's owner on a cluster)."""
        self._route = route
        self._endpoint = endpoint
        self._sharded = sharded
        self._refresh = refresh
        self._dirty.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._sync_loop(), name="herald-redis-sync"),
            asyncio.create_task(self._ping_loop(), name="herald-redis-ping"),
        ]

    async def close(self) -> None:
        self._closed = True
        await stop_tasks(self._tasks)
        self._tasks = []
        for wire in list(self._wires.values()):
            wire.close()
        self._wires.clear()
        for futures in self._waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()

    # ---- what the backplane wants ---------------------------------------------------

    def add(self, channel: bytes) -> None:
        n = self._desired.get(channel, 0)
        self._desired[channel] = n + 1
        if n == 0:
            if channel not in self._placed or channel in self._sent_at:
                self._pending.setdefault(channel, self._now())
            self._changed.add(channel)
            self._dirty.set()

    def remove(self, channel: bytes) -> None:
        n = self._desired.get(channel, 0)
        if n > 1:
            self._desired[channel] = n - 1
            return
        if n == 1:
            del self._desired[channel]
            self._pending.pop(channel, None)
            self._changed.add(channel)
            self._dirty.set()
            if channel in self._restoring:
                self._restoring.discard(channel)
                self._check_restored()

    def wants(self, channel: bytes) -> bool:
        return channel in self._desired

    @property
    def channels(self) -> Iterable[bytes]:
        return self._desired.keys()

    async def subscribed(self, channel: bytes, wait_s: float) -> bool:
        """Wait up to `wait_s` until Redis confirmed a wanted channel's subscription."""
        if channel not in self._desired:
            return False
        if channel not in self._pending:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(fut)
        try:
            async with asyncio.timeout(wait_s):
                await fut
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(channel)
            if waiters and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[channel]
        return True

    def restored(self) -> bool:
        """No subscription lost and not yet confirmed again by Redis."""
        return not self._restoring and not self._lost_addrs

    def _check_restored(self) -> None:
        if self.restored() and self._was_restoring:
            self._was_restoring = False
            if self.on_restored is not None:
                self.on_restored()

    def _lose(self, lost: set[bytes]) -> None:
        """Subscriptions of wanted channels are gone: restore them, tell the backplane."""
        now = self._now()
        for ch in lost:
            self._pending.setdefault(ch, now)
            self._lost_channels.add(ch)
            self._changed.add(ch)
        self._restoring |= lost
        self._was_restoring = True
        self._need_refresh = self._refresh is not None
        self._dirty.set()
        if lost and self.on_lost is not None:
            self.on_lost(lost)

    def healthy(self) -> bool:
        """Every connection up and answering, every wanted channel subscribed."""
        if self._route is None or not self._tasks or not self.restored():
            return False
        now = self._now()
        for wire in self._wires.values():
            if not wire.alive or now - wire.last_reply > DEAD_AFTER_S:
                return False
        if self._pending:
            oldest = next(iter(self._pending.values()))
            if now - oldest > CONFIRM_WITHIN_S:
                return False
        return True

    # ---- the sync task ------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        backoff = Backoff(BACKOFF_MIN_S, BACKOFF_MAX_S)
        while not self._closed:
            await self._dirty.wait()
            self._dirty.clear()
            if self._route is None:
                continue
            try:
                if self._need_refresh and self._refresh is not None:
                    self._need_refresh = False
                    await self._refresh()
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # OSError, timeouts, a cluster slot not covered…
                log.warning(
                    "redis pub/sub: %s: %s (retry in %.2fs)",
                    type(exc).__name__,
                    exc,
                    backoff.delay,
                )
                self._need_refresh = self._refresh is not None
                self._dirty.set()
                await backoff.sleep()
                continue
            backoff.reset()

    async def _sync(self) -> None:
        assert self._route is not None
        while self._changed:
            changed, self._changed = self._changed, set()
            drop: dict[_Wire, list[bytes]] = {}
            todo: dict[Addr, list[bytes]] = {}
            try:
                for ch in changed:
                    wire = self._placed.get(ch)
                    if ch in self._desired:
                        if wire is None:
                            todo.setdefault(self._route(ch), []).append(ch)
                    elif wire is not None:
                        self._unplace(ch, wire)
                        if wire.alive:
                            drop.setdefault(wire, []).append(ch)
            except BaseException:
                self._changed |= changed
                raise
            for wire, chans in drop.items():
                for ch in chans:
                    wire.unsubscribing[ch] = wire.unsubscribing.get(ch, 0) + 1
                self._send(wire, b"UNSUBSCRIBE", chans)
            for i, (addr, chans) in enumerate(todo.items()):
                try:
                    wire = await self._wire(addr)
                except BaseException:
                    for rest in list(todo.values())[i:]:
                        self._changed.update(rest)
                    raise
                chans = [c for c in chans if c in self._desired and c not in self._placed]
                now = self._now()
                for ch in chans:
                    self._placed[ch] = wire
                    wire.channels.add(ch)
                    self._sent_at[ch] = now
                    if ch in self._lost_channels:
                        self._lost_channels.discard(ch)
                        self.resubscribes += 1
                self._send(wire, b"SUBSCRIBE", chans)
            self._close_idle_wires()
        # Every wanted channel is placed again: an address lost for good (a cluster
        # node replaced by another) no longer holds readiness down.
        self._lost_addrs.clear()
        self._check_restored()

    def _send(self, wire: _Wire, verb: bytes, chans: list[bytes]) -> None:
        if not chans:
            return
        if self._sharded:
            verb = b"S" + verb
            groups: dict[int, list[bytes]] = {}
            for ch in chans:
                groups.setdefault(key_slot(ch), []).append(ch)
            batches: Iterable[list[bytes]] = groups.values()
        else:
            batches = (
                chans[i : i + SUBSCRIBE_BATCH] for i in range(0, len(chans), SUBSCRIBE_BATCH)
            )
        wire.send(b"".join(encode_command(verb, *batch) for batch in batches))

    def _unplace(self, ch: bytes, wire: _Wire) -> None:
        del self._placed[ch]
        wire.channels.discard(ch)
        self._sent_at.pop(ch, None)

    async def _wire(self, addr: Addr) -> _Wire:
        existing = self._wires.get(addr)
        if existing is not None and existing.alive:
            return existing
        loop = asyncio.get_running_loop()
        endpoint = self._endpoint
        wire: _Wire
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, wire = await loop.create_connection(
                lambda: _Wire(self, addr), addr[0], addr[1], ssl=endpoint.ssl
            )
        hello = endpoint.handshake()
        if hello:
            wire.send(hello)
        self._wires[addr] = wire
        if self._lost_addrs:
            self._lost_addrs.discard(addr)
            self.reconnects += 1
            log.warning("redis pub/sub: reconnected to %s:%d", *addr)
            if self.on_reconnect is not None:
                self.on_reconnect()
        return wire

    def _close_idle_wires(self) -> None:
        # On a cluster, a node that owns none of our channels needs no connection.
        if not self._sharded:
            return
        for addr, wire in list(self._wires.items()):
            if not wire.channels and not wire.unsubscribing:
                del self._wires[addr]
                wire.close()

    async def _ping_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(PING_INTERVAL_S)
            now = self._now()
            for wire in list(self._wires.values()):
                if now - wire.last_reply > DEAD_AFTER_S:
                    log.warning("redis pub/sub: %s:%d stopped answering; reconnecting", *wire.addr)
                    if wire.transport is not None:
                        wire.transport.abort()
                else:
                    wire.send(_PING)
            # A subscribe that got no answer (a MOVED on a cluster, a lost write):
            # place it again, after a topology refresh on a cluster.
            stuck = [ch for ch, at in self._sent_at.items() if now - at > 2 * CONFIRM_WITHIN_S]
            for ch in stuck:
                placed = self._placed.get(ch)
                if placed is not None:
                    self._unplace(ch, placed)
                    self._changed.add(ch)
            if stuck:
                self._need_refresh = self._refresh is not None
                self._dirty.set()

    # ---- events from the wires ------------------------------------------------------------

    def _deliver(self, batch: list[tuple[bytes, bytes]]) -> None:
        try:
            self._on_messages(batch)
        except Exception:  # a bug downstream must not kill the connection
            log.exception("redis pub/sub: delivering %d messages failed", len(batch))

    def _confirmed(self, wire: _Wire, ch: bytes) -> None:
        if self._placed.get(ch) is not wire:
            return
        self._sent_at.pop(ch, None)
        self._pending.pop(ch, None)
        waiters = self._waiters.pop(ch, None)
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        if ch in self._restoring:
            self._restoring.discard(ch)
            self._check_restored()

    def _unsubscribed(self, wire: _Wire, ch: bytes) -> None:
        n = wire.unsubscribing.get(ch, 0)
        if n:
            if n == 1:
                del wire.unsubscribing[ch]
            else:
                wire.unsubscribing[ch] = n - 1
            return
        if self._placed.get(ch) is wire:
            # Unasked: Redis Cluster moved the channel's slot to another node.
            self._unplace(ch, wire)
            if ch in self._desired:
                self._lose({ch})

    def _error(self, wire: _Wire, err: Exception) -> None:
        log.warning("redis pub/sub: %s:%d replied %s", wire.addr[0], wire.addr[1], err)
        if self._refresh is not None:
            self._need_refresh = True

    def _lost(self, wire: _Wire, exc: Exception | None) -> None:
        if self._wires.get(wire.addr) is wire:
            del self._wires[wire.addr]
        if wire.closing:
            return
        log.warning("redis pub/sub: lost %s:%d (%s)", wire.addr[0], wire.addr[1], exc or "closed")
        self._lost_addrs.add(wire.addr)
        lost: set[bytes] = set()
        for ch in wire.channels:
            if self._placed.get(ch) is wire:
                del self._placed[ch]
                self._sent_at.pop(ch, None)
                if ch in self._desired:
                    lost.add(ch)
        wire.channels.clear()
        wire.unsubscribing.clear()
        if self.on_outage is not None:
            self.on_outage()
        self._lose(lost)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

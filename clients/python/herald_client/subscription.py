"""A subscription that survives reconnects: it remembers the last offset and epoch it
delivered, drops replayed duplicates, and reports whether a resume filled the gap."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from herald_client.errors import CommandError

if TYPE_CHECKING:
    from herald_client.client import HeraldClient

log = logging.getLogger("herald_client")

Message = dict[str, Any]
MessageCallback = Callable[[Message], Awaitable[None] | None]
EventCallback = Callable[[str, dict[str, Any]], None]
_END = object()


class Emitter:
    """Named events with plain callbacks; a failing callback is logged, never raised."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._any: list[EventCallback] = []

    def on(self, event: str, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback(info)` on every `event`."""
        self._handlers.setdefault(event, []).append(callback)

    def on_any(self, callback: EventCallback) -> None:
        """Call `callback(event, info)` on every event."""
        self._any.append(callback)

    def emit(self, event: str, info: dict[str, Any]) -> None:
        for cb in self._handlers.get(event, ()):
            try:
                cb(info)
            except Exception:
                log.exception("%s handler failed", event)
        for any_cb in self._any:
            try:
                any_cb(event, info)
            except Exception:
                log.exception("event handler failed")


class Subscription(Emitter):
    """Messages for one pattern, delivered in order with no duplicate across reconnects.

    Iterate it (`async for msg in sub`) or pass a callback to `subscribe`. Events:
    `subscribed` (every (re)subscribe: `recovered`, `epoch`, `offset`, `resubscribe`),
    `recovered` (a resume's outcome; `recovered: False` means messages were missed:
    reload your state), `lagged` (`dropped`), `error` (`code`, `message`) and
    `state` (`state`: pending, subscribed, resubscribing, unsubscribed, failed).
    """

    def __init__(
        self,
        client: HeraldClient,
        pattern: str,
        options: dict[str, Any],
        callback: MessageCallback | None,
        since: int | None,
        epoch: str | None,
    ) -> None:
        super().__init__()
        self.client = client
        self.pattern = pattern
        self.options = options
        self.callback = callback
        self.key: str | None = None  # the server's `sub`
        self.epoch = epoch
        # The offset of the last message handed to the app: resume point and dedup line.
        self.offset: int | None = since
        self._resume_from: int | None = since
        self.state = "pending"
        self.delivered = 0
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._error: BaseException | None = None
        self.round = 0  # the connection attempt this was last sent on
        self._confirmed = asyncio.Event()

    @property
    def active(self) -> bool:
        return self.state not in ("unsubscribed", "failed")

    @functools.cached_property
    def resumable(self) -> bool:
        """Only a concrete topic in mode `all` has offsets to resume from."""
        wild = any(part in ("*", ">") for part in self.pattern.split("."))
        return not wild and self.options.get("mode", "all") == "all"

    def command(self, resubscribe: bool) -> dict[str, Any]:
        cmd: dict[str, Any] = {"op": "subscribe", "topic": self.pattern, **self.options}
        since = self.offset if self.offset is not None else self._resume_from
        if self.resumable and since is not None:
            cmd["since"] = since
            if self.epoch is not None:
                cmd["epoch"] = self.epoch
        return cmd

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.emit("state", {"state": state})

    def on_subscribed(self, reply: dict[str, Any], cmd: dict[str, Any], resubscribe: bool) -> None:
        self.key = reply.get("sub")
        recovered = reply.get("recovered")
        if "since" not in cmd:
            # No resume point: after a reconnect that means a possible gap.
            recovered = False if resubscribe else None
        if recovered is False:
            self.offset = None  # a new stream: no dedup against old offsets
        if reply.get("epoch") is not None:
            self.epoch = reply["epoch"]
        if self.offset is None and reply.get("offset") is not None:
            self._resume_from = reply["offset"]
        info = {
            "sub": self.key,
            "epoch": self.epoch,
            "offset": reply.get("offset"),
            "recovered": recovered,
            "resubscribe": resubscribe,
        }
        self._set_state("subscribed")
        self._confirmed.set()
        self.emit("subscribed", info)
        if recovered is not None:
            self.emit("recovered", info)

    def deliver(self, msg: Message) -> bool:
        """Queue one message unless it was delivered before (replay overlap)."""
        if self.state in ("unsubscribed", "failed"):
            return False
        off = msg.get("offset")
        # Offsets are per topic: only a concrete-topic subscription can compare them.
        if isinstance(off, int) and self.resumable:
            if self.offset is not None and off <= self.offset:
                return False
            self.offset = off
        self.delivered += 1
        self._queue.put_nowait(msg)
        return True

    def end(self, state: str, error: BaseException | None = None) -> None:
        if self.state in ("unsubscribed", "failed"):
            return
        self._error = error
        self._set_state(state)
        self._confirmed.set()
        self._queue.put_nowait(_END)

    def fail(self, exc: CommandError) -> None:
        self.emit("error", {"code": exc.code, "message": exc.message})
        self.end("failed", exc)

    async def ready(self) -> Subscription:
        """Wait for the server's first `subscribed` (raises if it refused)."""
        await self._confirmed.wait()
        if self._error is not None and self.state == "failed":
            raise self._error
        return self

    async def unsubscribe(self) -> None:
        """Stop the subscription; pending messages are still yielded, then iteration ends."""
        if self.state in ("unsubscribed", "failed"):
            return
        self.end("unsubscribed")
        await self.client._unsubscribe(self)

    # ---- consumption ----------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # later calls end too
            if self._error is not None and self.state == "failed":
                raise self._error
            raise StopAsyncIteration
        msg: Message = item
        return msg

    async def pump(self) -> None:
        """Feed the callback in order (a task per subscription, started by the client)."""
        assert self.callback is not None
        async for msg in self:
            try:
                res = self.callback(msg)
                if inspect.isawaitable(res):
                    await res
            except Exception:
                log.exception("subscription callback failed for %s", self.pattern)

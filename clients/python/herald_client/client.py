"""HeraldClient: one WebSocket to Herald that reconnects, resumes and refreshes its token.

Connection states (docs/clients.md draws the machine):

    connecting → authenticating → open → (drop) → waiting → connecting ...
                                      ↘ closed (close(), 1008, 4401 after one new token)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from herald_client.consumer import Consumer, JobHandler, default_nack_delay
from herald_client.errors import (
    ClientClosed,
    CommandError,
    ConnectionLost,
    HeraldClientError,
    OfflineQueueFull,
)
from herald_client.subscription import Emitter, MessageCallback, Subscription

log = logging.getLogger("herald_client")

TokenSource = Callable[[], Awaitable[str] | str]
# Ops whose resend after a reconnect cannot do harm (a publish only with its `msg_id`).
_RESENDABLE = {"ack", "nack", "extend", "ping"}
_FATAL_CODES = {1008}
CLOSE_UNAUTHORIZED = 4401


def jwt_exp(token: str | None) -> float | None:
    """The `exp` claim of a JWT (unverified: only to schedule a refresh), else None."""
    if not token or token.count(".") != 2:
        return None
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
        return float(exp) if isinstance(exp, int | float) else None
    except (ValueError, UnicodeDecodeError):
        return None


class _Drop(Exception):
    """Internal: the connection ended; carries the close code and any `reconnect` delay."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class HeraldClient(Emitter):
    """An asyncio Herald client; use it as `async with HeraldClient(url, token=...) as c`.

    Events (`client.on(name, cb)`): `state` (`state`), `connected` (`url`),
    `disconnected` (`code`, `reason`), `reconnecting` (`attempt`, `delay`),
    `token_refreshed` (`exp`), `lagged` (`sub`, `dropped`), `error` (`code`, `message`),
    `closed` (`code`, `reason`).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | None = None,
        get_token: TokenSource | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 20.0,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        connect_timeout: float = 10.0,
        command_timeout: float = 30.0,
        token_refresh_window: float = 30.0,
        max_offline_commands: int = 1000,
        subprotocol: str | None = "herald.v1",
        max_frame_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        super().__init__()
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("at least one URL is required")
        self.token = token
        self.get_token = get_token
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.token_refresh_window = token_refresh_window
        self.max_offline_commands = max_offline_commands
        self.subprotocol = subprotocol
        self.max_frame_bytes = max_frame_bytes
        self.state = "idle"
        self.url: str | None = None
        self.attempts = 0  # connection attempts, successful or not
        self.connects = 0  # connections that reached `open`
        self._url_index = 0
        self._ws: ClientConnection | None = None
        self._next_id = 0
        self._pending: dict[int, tuple[asyncio.Future[dict[str, Any]], dict[str, Any]]] = {}
        self._offline: deque[tuple[asyncio.Future[dict[str, Any]], dict[str, Any]]] = deque()
        self._subs: list[Subscription] = []
        self._consumers: dict[str, Consumer] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()
        self._closing = False
        self._close_error: ClientClosed | None = None
        self._reconnect_after: float | None = None
        self._refresh_timer: asyncio.TimerHandle | None = None
        self._refreshing = False
        self._outbox: asyncio.Queue[str] = asyncio.Queue()

    # ---- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> HeraldClient:
        self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def connect(self) -> None:
        """Start connecting in the background (commands queue until the socket is open)."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
            self._runner.add_done_callback(self._runner_done)

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        # A bug must not leave callers waiting forever on a client that stopped.
        if not task.cancelled() and task.exception() is not None:
            log.error("herald client stopped", exc_info=task.exception())
            self._give_up(None, f"client error: {task.exception()!r}")

    async def wait_open(self) -> None:
        """Wait until the connection is open (raises ClientClosed if the client gave up).
        Bound it with `asyncio.timeout`."""
        await self._opened.wait()
        if self._close_error is not None:
            raise self._close_error

    async def close(self) -> None:
        """Close the socket, stop reconnecting and end every subscription."""
        self._closing = True
        self._finish(ClientClosed("client closed"))
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for t in list(self._tasks):
            t.cancel()
        self._set_state("closed")

    def _finish(self, err: ClientClosed) -> None:
        if self._close_error is None:
            self._close_error = err
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
        for fut, _ in self._offline:
            if not fut.done():
                fut.set_exception(err)
        self._offline.clear()
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        for sub in self._subs:
            sub.end("failed" if err.code else "unsubscribed", err)
        self._opened.set()  # wake wait_open(), which then raises

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.emit("state", {"state": state})

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- the reconnect loop ---------------------------------------------------------

    def backoff(self, failures: int) -> float:
        """Full jitter: uniform(0, min(max_backoff, min_backoff * 2**failures))."""
        return random.uniform(0, min(self.max_backoff, self.min_backoff * 2 ** min(failures, 30)))

    async def _run(self) -> None:
        failures = 0
        asked_token = False
        while not self._closing:
            url = self.urls[self._url_index % len(self.urls)]
            self._url_index += 1
            self.attempts += 1
            self._set_state("connecting")
            opened = False
            try:
                await self._ensure_fresh_token()
                ws = await connect(
                    url,
                    open_timeout=self.connect_timeout,
                    ping_interval=None,  # liveness is ours: see _read
                    close_timeout=2,
                    max_size=self.max_frame_bytes,
                    compression=None,
                    subprotocols=[self.subprotocol] if self.subprotocol else None,  # type: ignore[list-item]
                )
            except (OSError, InvalidHandshake, TimeoutError, HeraldClientError) as exc:
                code: int | None = None
                reason = f"{type(exc).__name__}: {exc}"
            else:
                self._ws = ws
                self.url = url
                try:
                    opened = await self._session(ws)
                    code, reason = None, "closed"
                except _Drop as drop:
                    code, reason = drop.code, drop.reason
                    opened = self.state == "open"
                finally:
                    self._ws = None
                    self._connection_lost()
            if self._closing:
                return
            self._set_state("waiting")
            self.emit("disconnected", {"code": code, "reason": reason})
            if code in _FATAL_CODES:
                self._give_up(code, reason)
                return
            if code == CLOSE_UNAUTHORIZED:
                if opened:
                    asked_token = False
                if self.get_token is None or asked_token:
                    self._give_up(code, reason)
                    return
                asked_token = True
                try:
                    self.token = await self._call_get_token()
                except Exception as exc:
                    self._give_up(code, f"get_token failed: {exc!r}")
                    return
            elif opened:
                asked_token = False
            failures = 0 if opened else failures + 1
            if self._reconnect_after is not None:
                delay, self._reconnect_after = self._reconnect_after, None
            else:
                delay = self.backoff(failures)
            self.emit("reconnecting", {"attempt": self.attempts + 1, "delay": delay})
            await asyncio.sleep(delay)

    def _give_up(self, code: int | None, reason: str) -> None:
        self._closing = True
        err = ClientClosed(f"connection closed with {code}: {reason}", code)
        self.emit("error", {"code": "closed", "message": str(err)})
        self._finish(err)
        self._set_state("closed")
        self.emit("closed", {"code": code, "reason": reason})

    async def _session(self, ws: ClientConnection) -> bool:
        """Authenticate, restore subscriptions and consumers, flush, then read."""
        # One writer per connection keeps frames in the order they were issued.
        self._outbox = asyncio.Queue()
        writer = asyncio.ensure_future(self._writer(ws, self._outbox))
        reader = asyncio.ensure_future(self._read(ws))
        try:
            setup = asyncio.ensure_future(self._setup())
            done, _ = await asyncio.wait({reader, setup}, return_when=asyncio.FIRST_COMPLETED)
            if setup in done:
                try:
                    setup.result()
                except (HeraldClientError, TimeoutError) as exc:
                    # Auth refused without a close, or no reply: drop and retry later.
                    self.emit("error", {"code": "setup_failed", "message": str(exc)})
                    await ws.close()
                    raise _Drop(None, f"connection setup failed: {exc}") from None
            else:
                setup.cancel()
                with contextlib.suppress(asyncio.CancelledError, HeraldClientError):
                    await setup
            await reader
        finally:
            reader.cancel()
            writer.cancel()
        return True

    async def _setup(self) -> None:
        if self.token:
            self._set_state("authenticating")
            reply = await self._send_now({"op": "auth", "token": self.token})
            self._authenticated(reply)
        # Loop until every live subscription and consumer was sent on this connection:
        # some may be added while we await replies.
        while todo := [s for s in self._subs if s.round != self.attempts and s.active]:
            for sub in todo:
                sub.round = self.attempts
                resub = sub.state != "pending"
                if resub:
                    sub._set_state("resubscribing")
                await self._subscribe_now(sub, resub, raise_errors=False)
        while todo_c := [c for c in self._consumers.values() if c.round != self.attempts]:
            consumer = todo_c[0]
            consumer.round = self.attempts
            try:
                await self._send_now(consumer.command())
            except CommandError as exc:
                self._consumers.pop(consumer.queue, None)
                self.emit("error", {"code": exc.code, "message": exc.message})
        self._set_state("open")
        self.connects += 1
        self._opened.set()
        self.emit("connected", {"url": self.url})
        while self._offline and self.state == "open":
            fut, cmd = self._offline.popleft()
            if not fut.done():
                self._transmit(fut, cmd)

    def _connection_lost(self) -> None:
        self._opened.clear()
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
            self._refresh_timer = None
        # Resend what is safe, in order, ahead of newer offline commands; fail the rest.
        keep = []
        for fut, cmd in self._pending.values():
            if fut.done():
                continue
            if not cmd.get("_internal") and (
                cmd["op"] in _RESENDABLE or (cmd["op"] == "publish" and "msg_id" in cmd)
            ):
                keep.append((fut, cmd))
            else:
                fut.set_exception(ConnectionLost(f"connection lost during {cmd['op']}"))
        self._pending.clear()
        self._offline.extendleft(reversed(keep))

    async def _read(self, ws: ClientConnection) -> None:
        """Dispatch frames; declare the peer dead after ping_interval + ping_timeout of silence."""
        pinged = False
        while True:
            try:
                raw = await asyncio.wait_for(
                    ws.recv(), self.ping_timeout if pinged else self.ping_interval
                )
            except TimeoutError:
                if pinged:
                    ws.transport.abort()
                    raise _Drop(None, "no data or pong: connection presumed dead") from None
                pinged = True
                self._outbox.put_nowait(json.dumps({"op": "ping"}))
                continue
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                raise _Drop(
                    rcvd.code if rcvd else None, rcvd.reason if rcvd else str(exc)
                ) from None
            pinged = False
            try:
                frame = json.loads(raw)
            except ValueError:
                log.warning("ignoring a frame that is not JSON")
                continue
            if isinstance(frame, dict):
                self._dispatch(frame)

    async def _writer(self, ws: ClientConnection, outbox: asyncio.Queue[str]) -> None:
        with contextlib.suppress(ConnectionClosed):  # a failed write shows up in _read
            while True:
                await ws.send(await outbox.get())

    # ---- frames ---------------------------------------------------------------------

    def _dispatch(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        cid = frame.get("id")
        if isinstance(cid, int) and cid in self._pending:
            fut, _ = self._pending.pop(cid)
            if not fut.done():
                if op == "error":
                    err = frame.get("error", frame)
                    fut.set_exception(
                        CommandError(str(err.get("code")), str(err.get("message")), frame)
                    )
                else:
                    fut.set_result(frame)
            return
        if op == "msgs":
            key = frame.get("sub")
            for sub in self._subs:
                if sub.key == key:
                    for msg in frame.get("msgs", ()):
                        sub.deliver(msg)
        elif op == "job":
            consumer = self._consumers.get(str(frame.get("queue")))
            if consumer is not None:
                consumer.on_job(frame)
        elif op == "lagged":
            info = {"sub": frame.get("sub"), "dropped": frame.get("dropped")}
            for sub in self._subs:
                if sub.key == frame.get("sub"):
                    sub.emit("lagged", info)
            self.emit("lagged", info)
        elif op == "reconnect":
            after = frame.get("after_ms")
            self._reconnect_after = max(0.0, float(after)) / 1000 if isinstance(after, int) else 0
            self.emit("reconnect", {"reason": frame.get("reason"), "after_ms": after})
        elif op == "token_expiring":
            # Refresh at half the time left, unless this token is newer than the notice.
            exp, in_ms, ours = frame.get("exp"), frame.get("in_ms"), jwt_exp(self.token)
            if not (ours and isinstance(exp, int | float) and ours > exp):
                left = float(in_ms) / 1000 if isinstance(in_ms, int | float) else 0.0
                self._schedule_refresh(max(0.0, left / 2))
        elif op == "error":
            info = {"code": frame.get("code"), "message": frame.get("message")}
            ended = [s for s in self._subs if frame.get("sub") and s.key == frame.get("sub")]
            for sub in ended:
                sub.fail(CommandError(str(info["code"]), str(info["message"]), frame))
                self._subs.remove(sub)
            self.emit("error", info)

    # ---- commands -------------------------------------------------------------------

    def _transmit(self, fut: asyncio.Future[dict[str, Any]], cmd: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            self._offline.append((fut, cmd))
            return
        self._next_id += 1
        self._pending[self._next_id] = (fut, cmd)
        wire = {k: v for k, v in cmd.items() if not k.startswith("_")}
        wire["id"] = self._next_id
        self._outbox.put_nowait(json.dumps(wire))

    async def _send_now(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Send on the current socket, bypassing the offline queue (connection setup)."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._transmit(fut, {**cmd, "_internal": True})
        return await asyncio.wait_for(fut, self.command_timeout)

    async def request(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Send any command and return its reply; queued while disconnected.

        Raises CommandError on an `error` reply, OfflineQueueFull when disconnected with
        a full queue, ConnectionLost when the socket dropped with the command in flight
        and resending it is not safe, ClientClosed after close().
        """
        if self._close_error is not None:
            raise self._close_error
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self.state == "open":
            self._transmit(fut, cmd)
        elif len(self._offline) >= self.max_offline_commands:
            raise OfflineQueueFull(
                f"disconnected and {self.max_offline_commands} commands are already queued"
            )
        else:
            self._offline.append((fut, cmd))
        return await asyncio.wait_for(fut, self.command_timeout)

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        attributes: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> dict[str, Any]:
        """Publish; returns `{"op": "published", "msg_id", "offset"?}`.

        With `id` (the idempotency key) a publish in flight during a drop is resent,
        and the server accepts it once.
        """
        cmd: dict[str, Any] = {"op": "publish", "topic": topic, "data": data}
        if attributes:
            cmd["attributes"] = attributes
        if id is not None:
            cmd["msg_id"] = id
        return await self.request(cmd)

    async def subscribe(
        self,
        pattern: str,
        callback: MessageCallback | None = None,
        *,
        filter: dict[str, Any] | None = None,
        batch_ms: int | None = None,
        mode: str | None = None,
        key: str | None = None,
        since: int | None = None,
        epoch: str | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> Subscription:
        """Subscribe; returns once the server confirmed (or queues it while offline).

        `since`/`epoch` resume from a saved position; afterwards the client tracks both.
        """
        options: dict[str, Any] = {}
        if filter is not None:
            options["filter"] = filter
        if batch_ms:
            options["batch_ms"] = batch_ms
        if mode is not None:
            options["mode"] = mode
        if key is not None:
            options["key"] = key
        sub = Subscription(self, pattern, options, callback, since, epoch)
        if on_event is not None:
            sub.on_any(on_event)
        if self._close_error is not None:
            raise self._close_error
        self._subs.append(sub)
        if callback is not None:
            self._spawn(sub.pump())
        if self.state == "open":
            sub.round = self.attempts
            await self._subscribe_now(sub, False)
        return sub

    async def _subscribe_now(
        self, sub: Subscription, resubscribe: bool, raise_errors: bool = True
    ) -> None:
        cmd = sub.command(resubscribe)
        try:
            reply = await self._send_now(cmd)
        except CommandError as exc:
            sub.fail(exc)
            if sub in self._subs:
                self._subs.remove(sub)
            if raise_errors:
                raise
            return
        sub.on_subscribed(reply, cmd, resubscribe)

    async def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        shared = any(s.key == sub.key for s in self._subs)
        if sub.key and not shared and self.state == "open":
            with contextlib.suppress(HeraldClientError, TimeoutError):
                await self.request({"op": "unsubscribe", "sub": sub.key})

    async def consume(
        self,
        queue: str,
        handler: JobHandler,
        *,
        prefetch: int = 1,
        visibility_timeout: int | None = None,
        nack_delay: Callable[[int], float] | None = None,
    ) -> Consumer:
        """Run `handler(job)` for each job: ack when it returns, nack with backoff when it
        raises. Survives reconnects (jobs in flight at a drop are redelivered)."""
        if queue in self._consumers:
            raise ValueError(f"already consuming {queue!r}")
        consumer = Consumer(
            self, queue, handler, prefetch, visibility_timeout, nack_delay or default_nack_delay
        )
        self._consumers[queue] = consumer
        if self.state == "open":
            consumer.round = self.attempts
            try:
                await self._send_now(consumer.command())
            except CommandError:
                del self._consumers[queue]
                raise
        return consumer

    def _stop_consumer(self, consumer: Consumer) -> None:
        self._consumers.pop(consumer.queue, None)

    # ---- tokens ---------------------------------------------------------------------

    async def _call_get_token(self) -> str:
        assert self.get_token is not None
        try:
            res = self.get_token()
            token = await res if inspect.isawaitable(res) else res
        except Exception as exc:
            raise HeraldClientError(f"get_token failed: {exc!r}") from exc
        if not isinstance(token, str) or not token:
            raise HeraldClientError("get_token returned no token")
        return token

    async def _ensure_fresh_token(self) -> None:
        exp = jwt_exp(self.token)
        if self.get_token is not None and (self.token is None or (exp and exp < time.time() + 1)):
            self.token = await self._call_get_token()

    def _authenticated(self, reply: dict[str, Any]) -> None:
        exp = jwt_exp(self.token)
        if exp is not None and self.get_token is not None:
            left = exp - time.time()
            # Refresh `window` before exp, but never before half the lifetime left,
            # so a short-lived token does not turn into a refresh loop.
            self._schedule_refresh(max(0.0, left - min(self.token_refresh_window, left / 2)))

    def _schedule_refresh(self, delay: float) -> None:
        if self.get_token is None or self._refreshing:
            return
        if self._refresh_timer is not None and self._refresh_timer.when() <= (
            asyncio.get_running_loop().time() + delay
        ):
            return  # an earlier refresh is already planned
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
        self._refresh_timer = asyncio.get_running_loop().call_later(
            delay, lambda: self._spawn(self._refresh())
        )

    async def _refresh(self) -> None:
        """Fetch a new token and send `auth` on the live connection."""
        self._refresh_timer = None
        if self.state != "open" or self._refreshing:
            return
        self._refreshing = True
        try:
            self.token = await self._call_get_token()
            reply = await self._send_now({"op": "auth", "token": self.token})
            self.emit("token_refreshed", {"exp": reply.get("exp", jwt_exp(self.token))})
        except (HeraldClientError, TimeoutError) as exc:
            self.emit("error", {"code": "token_refresh_failed", "message": str(exc)})
            return
        finally:
            self._refreshing = False
        self._authenticated(reply)

"""Locust scenario for Herald: WebSocket subscribers, HTTP publishers, queue producers/consumers.

Run through `python -m loadtest.locust_run` (starts its own `herald serve` when no --host is
given), or directly:

    locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 30s --host http://127.0.0.1:8080

User kinds (env `HERALD_LOCUST_USERS`, comma-separated, default `ws,http,queue`):

- `ws`    `WebSocketSubscriber`: one socket on `/ws` subscribed to `load.*.score` with the
          filter `{"gameId": ["1", "2"]}`. Every delivered message is one locust request
          `WS deliver` whose response time is now - `data.sent_ms` (publish-to-delivery
          latency, wall clock; publisher and subscriber share this host's clock). A message
          outside the pattern or filter, an `error` or `lagged` frame, or a dropped
          connection is a failure.
- `http`  `HttpPublisher`: `POST /v1/publish` to `load.<gameId>.score` with gameId 1..4 (so
          half of the messages are filtered out), and now and then `POST /v1/publish/batch`.
- `queue` `QueueProducer` and `QueueConsumer` on queue `load-q` (created in on_start):
          send, receive (long poll) and ack; `QUEUE job` times send-to-receive.

`HERALD_TOKEN` (optional) is sent as `Authorization: Bearer` over HTTP and `?token=` on /ws.
`HERALD_LOCUST_PUBLISH_INTERVAL` (seconds, default 0.1) paces each publisher and producer.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from locust import FastHttpUser, User, between, constant, constant_pacing, task
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

KINDS = ("ws", "http", "queue")
TOPIC_PATTERN = "load.*.score"
GAME_IDS = ("1", "2", "3", "4")
FILTERED_IDS = ("1", "2")  # what subscribers ask for; 3 and 4 must never reach them
QUEUE = "load-q"
TOKEN = os.environ.get("HERALD_TOKEN") or None
PUBLISH_INTERVAL = float(os.environ.get("HERALD_LOCUST_PUBLISH_INTERVAL", "0.1"))
RECV_TIMEOUT = 1.0
OPEN_TIMEOUT = 10.0


class ProtocolViolation(Exception):
    """The server sent something the scenario says it must not."""


def selected_kinds(raw: str | None = None) -> set[str]:
    """Parse `HERALD_LOCUST_USERS` (default: every kind); unknown kinds are an error."""
    raw = os.environ.get("HERALD_LOCUST_USERS", "") if raw is None else raw
    kinds = {k.strip() for k in raw.split(",") if k.strip()} or set(KINDS)
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(
            f"HERALD_LOCUST_USERS: unknown kind(s) {sorted(unknown)}; choose from {KINDS}"
        )
    return kinds


def now_ms() -> float:
    return time.time() * 1000.0


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}


def ws_url(host: str) -> str:
    """http(s)://h:p[/prefix] -> ws(s)://h:p[/prefix]/ws[?token=...]."""
    parts = urlsplit(host)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = f"token={quote(TOKEN, safe='')}" if TOKEN else ""
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", query, ""))


class WebSocketSubscriber(User):
    """One WebSocket per user; its single task drains the socket and times each delivery."""

    weight = 3
    wait_time = constant(0)  # the task blocks in recv (up to RECV_TIMEOUT) itself

    ws: ClientConnection | None = None
    sub: str | None = None

    def fire(
        self,
        name: str,
        response_time: float,
        length: int = 0,
        exception: BaseException | None = None,
    ) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=response_time,
            response_length=length,
            exception=exception,
            context={},
        )

    def on_start(self) -> None:
        self.open()

    def on_stop(self) -> None:
        self.close()

    def open(self) -> None:
        assert self.host, "--host is required"
        start = time.perf_counter()
        try:
            self.ws = connect(
                ws_url(self.host),
                compression=None,
                open_timeout=OPEN_TIMEOUT,
                max_size=4 << 20,
                legacy=True,
            )
        except Exception as exc:
            self.fire("connect", (time.perf_counter() - start) * 1000, exception=exc)
            self.ws = None
            return
        self.fire("connect", (time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        cmd = {
            "op": "subscribe",
            "id": 1,
            "topic": TOPIC_PATTERN,
            "filter": {"gameId": list(FILTERED_IDS)},
        }
        try:
            self.ws.send(json.dumps(cmd))
            reply = json.loads(self.ws.recv(timeout=OPEN_TIMEOUT))
            if reply.get("op") != "subscribed" or reply.get("id") != 1 or not reply.get("sub"):
                raise ProtocolViolation(f"subscribe answered {reply!r}")
        except Exception as exc:
            self.fire("subscribe", (time.perf_counter() - start) * 1000, exception=exc)
            self.close()
            return
        self.sub = reply["sub"]
        self.fire("subscribe", (time.perf_counter() - start) * 1000)

    def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            with contextlib.suppress(Exception):  # a broken socket: nothing left to report
                ws.close()

    @task
    def receive(self) -> None:
        if self.ws is None:
            time.sleep(1)  # gevent-patched; back off before reconnecting
            self.open()
            return
        try:
            raw = self.ws.recv(timeout=RECV_TIMEOUT)
        except TimeoutError:
            return
        except ConnectionClosed as exc:
            self.fire("connection", 0, exception=exc)
            self.close()
            return
        self.handle(raw)

    def handle(self, raw: str | bytes) -> None:
        received = now_ms()
        try:
            frame = json.loads(raw)
        except ValueError as exc:
            self.fire("frame", 0, len(raw), exception=exc)
            return
        op = frame.get("op")
        if op != "msgs":
            if op == "pong":
                return
            # error, lagged, reconnect or anything unexpected is a failure in this scenario.
            self.fire(str(op), 0, len(raw), exception=ProtocolViolation(str(raw)[:300]))
            return
        msgs = frame.get("msgs") or []
        if frame.get("sub") != self.sub:
            wrong = ProtocolViolation(f"msgs for sub {frame.get('sub')!r}, not {self.sub!r}")
            self.fire("deliver", 0, len(raw), exception=wrong)
            return
        size = len(raw) // max(len(msgs), 1)
        for msg in msgs:
            data = msg.get("data") if isinstance(msg, dict) else None
            sent = data.get("sent_ms") if isinstance(data, dict) else None
            game = (msg.get("attributes") or {}).get("gameId")
            topic = str(msg.get("topic", ""))
            problem: Exception | None = None
            if not isinstance(sent, int | float):
                problem = ProtocolViolation(f"no data.sent_ms in {msg!r}"[:300])
            elif game not in FILTERED_IDS:
                problem = ProtocolViolation(f"filter let through gameId={game!r}")
            elif not (topic.startswith("load.") and topic.endswith(".score")):
                problem = ProtocolViolation(f"pattern let through topic {topic!r}")
            latency = max(received - sent, 0.0) if isinstance(sent, int | float) else 0.0
            self.fire("deliver", latency, size, exception=problem)


def game_message(game: str | None = None) -> dict[str, Any]:
    game = game or random.choice(GAME_IDS)
    return {
        "topic": f"load.{game}.score",
        "data": {"sent_ms": now_ms(), "home": random.randint(0, 9), "away": random.randint(0, 9)},
        "attributes": {"gameId": game},
    }


class HttpPublisher(FastHttpUser):
    """Publishes game scores over HTTP; 1 in 10 calls is a batch of 10."""

    weight = 1
    wait_time = constant_pacing(PUBLISH_INTERVAL)
    default_headers = auth_headers()

    @task(9)
    def publish(self) -> None:
        with self.client.post(
            "/v1/publish", json=game_message(), name="/v1/publish", catch_response=True
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"status {resp.status_code}: {resp.text[:200]}")
            elif not (resp.json() or {}).get("id"):
                resp.failure(f"no id in {resp.text[:200]}")

    @task(1)
    def publish_batch(self) -> None:
        messages = [game_message() for _ in range(10)]
        with self.client.post(
            "/v1/publish/batch",
            json={"messages": messages},
            name="/v1/publish/batch",
            catch_response=True,
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"status {resp.status_code}: {resp.text[:200]}")
                return
            results = (resp.json() or {}).get("results") or []
            bad = [r for r in results if "id" not in r]
            if len(results) != len(messages) or bad:
                resp.failure(f"{len(results)} results, bad: {bad[:3]}")


class QueueUser(FastHttpUser):
    """Shared by producer and consumer: creates `load-q` (idempotent PUT) on start."""

    abstract = True
    default_headers = auth_headers()

    def queue_call(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        ok: tuple[int, ...] = (200,),
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        """One call on the queue's `path`, named by its route: the JSON answer, or None
        (and a failed request) when the status is not in `ok` or `check` names a fault."""
        with self.client.request(
            method,
            f"/v1/queues/{QUEUE}{path}",
            json=body,
            name=f"/v1/queues/[name]{path}",
            catch_response=True,
        ) as resp:
            if resp.status_code not in ok:
                resp.failure(f"status {resp.status_code}: {resp.text[:200]}")
                return None
            out = None
            with contextlib.suppress(ValueError):
                out = resp.json()
            problem = check(out) if check is not None else None
            if problem:
                resp.failure(problem)
            return out

    def on_start(self) -> None:
        self.queue_call("PUT", "", {"visibility_timeout": 30}, ok=(200, 201))


def _has_id(out: Any) -> str | None:
    return None if (out or {}).get("id") else f"no id in {out!r}"[:200]


def _all_acked(out: Any) -> str | None:
    results = out.get("results", []) if isinstance(out, dict) else out
    bad = [r for r in results or [] if "error" in r or r.get("ok") is False]
    return f"ack refused: {bad[:3]}" if bad else None


class QueueProducer(QueueUser):
    weight = 1
    wait_time = constant_pacing(PUBLISH_INTERVAL)

    @task
    def send(self) -> None:
        body = {"sent_ms": now_ms(), "n": random.randint(0, 1 << 30)}
        self.queue_call("POST", "/messages", {"body": body}, ok=(201,), check=_has_id)


class QueueConsumer(QueueUser):
    weight = 1
    wait_time = between(0, 0.05)  # receive itself long-polls for up to 1 s

    @task
    def receive_and_ack(self) -> None:
        out = self.queue_call("POST", "/receive", {"max": 10, "wait": 1})
        if out is None:
            return
        messages = out.get("messages") or []
        received = now_ms()
        receipts = []
        for m in messages:
            receipts.append(m.get("receipt"))
            body = m.get("body")
            sent = body.get("sent_ms") if isinstance(body, dict) else None
            ok = isinstance(sent, int | float) and bool(m.get("receipt"))
            self.environment.events.request.fire(
                request_type="QUEUE",
                name="job",
                response_time=max(received - sent, 0.0) if isinstance(sent, int | float) else 0.0,
                response_length=0,
                exception=None if ok else ProtocolViolation(f"bad message {m!r}"[:300]),
                context={},
            )
        if receipts:
            self.queue_call("POST", "/ack", {"receipts": receipts}, check=_all_acked)


_CLASSES: dict[str, tuple[type[User], ...]] = {
    "ws": (WebSocketSubscriber,),
    "http": (HttpPublisher,),
    "queue": (QueueProducer, QueueConsumer),
}
for _kind, _classes in _CLASSES.items():
    if _kind not in selected_kinds():
        for _cls in _classes:
            _cls.abstract = True  # locust only runs non-abstract User classes

"""Webhook delivery: POST the messages of webhook subscriptions, with SNS retry policies.

Each webhook subscription is backed by an internal durable queue (`_webhook-<id>`)
that fan-out writes to like any subscribed queue. Every gateway runs one loop per
subscription that receives from that queue and POSTs; so a message survives a
gateway crash and is delivered by whichever gateway receives it. A failed attempt
is nacked with the policy's delay (the store keeps the wait, not this process);
a delivered one is acked; an exhausted or refused one goes to the subscription's
dead-letter queue, or is counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from prometheus_client.core import CounterMetricFamily, Metric, SummaryMetricFamily

from fanout.queues import QueueService, QueueSubscription
from fanout.queues.webhook_policy import DeliveryPolicy, Throttle, classify
from shared.errors import HeraldError

log = logging.getLogger("herald.webhooks")

SYNC_S = 1.0  # how often the set of subscriptions is re-read (other gateways change it)
RECEIVE_WAIT_S = 1.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`Herald-Signature`: hex HMAC-SHA256 of `timestamp + "." + body` with the secret."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, msg_id: str, body: bytes, kind: str) -> dict[str, str]:
    ts = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "Herald-Message-Type": kind,
        "Herald-Message-Id": msg_id,
        "Herald-Timestamp": ts,
        "Herald-Signature": sign(secret, ts, body),
    }


def endpoint_label(url: str) -> str:
    """The endpoint as a metric label: no user:password, query or fragment (credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def sns_headers(sub: QueueSubscription, kind: str, msg_id: str) -> dict[str, str]:
    """The `x-amz-sns-*` headers SNS sends an http(s) endpoint (SNS API subscriptions)."""
    opts = sub.options or {}
    out = {
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": kind,
        "x-amz-sns-message-id": msg_id,
        "x-amz-sns-topic-arn": str(opts.get("topic_arn", "")),
    }
    if kind == "Notification":
        out["x-amz-sns-subscription-arn"] = str(opts.get("subscription_arn", ""))
    return out


def sns_confirmation(sub: QueueSubscription, confirm_url: str) -> bytes:
    """The SNS SubscriptionConfirmation message (unsigned, like every Herald envelope)."""
    opts = sub.options or {}
    return orjson.dumps(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": sub.id,
            "Token": (sub.webhook or {}).get("token"),
            "TopicArn": opts.get("topic_arn", ""),
            "Message": f"You have chosen to subscribe to the topic {opts.get('topic_arn', '')}."
            " To confirm the subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": confirm_url,
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "SignatureVersion": "1",
            "Signature": "",
            "SigningCertURL": "",
        }
    )


@dataclass(slots=True)
class HookStats:
    """Counters of one subscription in this process."""

    endpoint: str
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    dead_lettered: int = 0
    latency_sum_s: float = 0.0


class WebhookDispatcher:
    """Runs the delivery loops of every webhook subscription in this process."""

    def __init__(
        self,
        queues: QueueService,
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queues = queues
        self.timeout_s = timeout_s
        self.clock = clock
        self.stats: dict[str, HookStats] = {}
        self._subs: dict[str, QueueSubscription] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._throttles: dict[str, Throttle] = {}
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._sync_now = asyncio.Event()

    async def start(self) -> None:
        # Bounded in every phase: a hanging endpoint costs one timeout, not a worker.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s), follow_redirects=False
        )
        self._task = asyncio.create_task(self._supervise())

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._workers.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._workers.clear()
        if self._client is not None:
            await self._client.aclose()

    def changed(self) -> None:
        """Re-read the subscriptions now (one was created or deleted here)."""
        self._sync_now.set()

    async def _supervise(self) -> None:
        while True:
            try:
                await self._sync()
            except Exception:  # the store may be briefly away; try again next tick
                log.exception("webhook subscription sync failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_S):
                    await self._sync_now.wait()
            self._sync_now.clear()

    async def _sync(self) -> None:
        subs = {s.id: s for s in await self.queues.webhook_subscriptions()}
        self._subs = subs
        for sub_id in list(self._workers):
            if sub_id not in subs:
                self._workers.pop(sub_id).cancel()
        for sub_id, sub in subs.items():
            hook = sub.webhook or {}
            self.stats.setdefault(sub_id, HookStats(endpoint_label(hook.get("endpoint", ""))))
            rate = hook.get("delivery_policy", {}).get("maxReceivesPerSecond")
            if sub_id not in self._throttles or self._throttles[sub_id].rate != rate:
                self._throttles[sub_id] = Throttle(rate)
            worker = self._workers.get(sub_id)
            if worker is not None and worker.done():  # a bug ended it: log, start again
                if not worker.cancelled() and worker.exception() is not None:
                    log.error("webhook %s worker died", sub_id, exc_info=worker.exception())
                del self._workers[sub_id]
            if hook.get("confirmed", True) and sub_id not in self._workers:
                self._workers[sub_id] = asyncio.create_task(self._deliver_forever(sub_id))

    async def _deliver_forever(self, sub_id: str) -> None:
        while sub_id in self._subs:
            sub = self._subs[sub_id]
            try:
                msgs = await self.queues.receive(sub.queue, max=1, wait=RECEIVE_WAIT_S)
            except HeraldError as exc:
                log.warning("webhook %s: receive failed: %s", sub_id, exc.message)
                await asyncio.sleep(RECEIVE_WAIT_S)
                continue
            for msg in msgs:
                wait = self._throttles[sub_id].reserve(self.clock())
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    await self._deliver(self._subs.get(sub_id, sub), msg)
                except HeraldError as exc:  # the store went away mid-way: it comes back
                    log.warning("webhook %s: %s", sub_id, exc.message)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
        assert self._client is not None
        try:
            r = await self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return None, f"timeout after {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return r.status_code, ""

    async def _deliver(self, sub: QueueSubscription, msg: dict[str, Any]) -> None:
        hook = sub.webhook or {}
        policy = DeliveryPolicy(**hook["delivery_policy"])
        envelope = msg["body"]
        if sub.options is not None:
            # SNS API subscription: fan-out already made the SNS envelope (or raw text).
            body = str(envelope).encode()
            msg_id = msg["id"]
            headers = signed_headers(hook["secret"], msg_id, body, "Notification")
            headers |= sns_headers(sub, "Notification", msg_id)
        else:
            body = orjson.dumps(envelope.get("data") if hook.get("raw") else envelope)
            msg_id = str(envelope.get("id", msg["id"]))
            headers = signed_headers(hook["secret"], msg_id, body, "Notification")
        headers["Herald-Subscription-Id"] = sub.id
        headers["Herald-Attempt"] = str(msg["receive_count"])
        status, error = await self._post(hook["endpoint"], body, headers)
        outcome = classify(status, error, msg["receive_count"], policy)
        stats = self.stats.setdefault(sub.id, HookStats(endpoint_label(hook["endpoint"])))
        if outcome.action == "ack":
            stats.delivered += 1
            ts = envelope.get("ts") if isinstance(envelope, dict) else None
            if isinstance(ts, int):
                stats.latency_sum_s += max(time.time() - ts / 1000, 0.0)
            await self.queues.ack(sub.queue, [msg["receipt"]])
        elif outcome.action == "retry":
            await self.queues.nack(sub.queue, msg["receipt"], outcome.delay)
            stats.retried += 1  # after the nack: the retry is then held by the store
        else:
            stats.failed += 1
            log.warning("webhook %s: giving up on %s: %s", sub.id, msg_id, outcome.error)
            await self._dead_letter(sub, msg, outcome.error, stats)
            await self.queues.ack(sub.queue, [msg["receipt"]])

    async def _dead_letter(
        self, sub: QueueSubscription, msg: dict[str, Any], error: str, stats: HookStats
    ) -> None:
        dlq = (sub.webhook or {}).get("dead_letter")
        if not dlq:
            return  # counted in `failed` and dropped, as SNS does without a DLQ
        attributes = dict(msg["attributes"]) | {
            "herald_error": error[:256],
            "herald_subscription": sub.id,
            "herald_attempts": msg["receive_count"],
        }
        try:
            await self.queues.send(dlq["queue"], {"body": msg["body"], "attributes": attributes})
        except HeraldError as exc:
            log.error("webhook %s: dead-letter queue refused: %s", sub.id, exc.message)
            return
        stats.dead_lettered += 1

    async def send_confirmation(self, sub_id: str, confirm_url: str) -> None:
        """POST the SNS-style SubscriptionConfirmation (retried with the policy's delays)."""
        sub = await self.queues.get_subscription(sub_id)
        hook = sub.webhook or {}
        if sub.options is not None:
            body = sns_confirmation(sub, confirm_url)
        else:
            body = orjson.dumps(
                {
                    "type": "SubscriptionConfirmation",
                    "subscription_id": sub.id,
                    "topic": sub.topic,
                    "token": hook.get("token"),
                    "confirm_url": confirm_url,
                }
            )
        policy = DeliveryPolicy(**hook["delivery_policy"])
        for attempt in range(1, policy.max_attempts + 1):
            headers = signed_headers(hook["secret"], sub.id, body, "SubscriptionConfirmation")
            if sub.options is not None:
                headers |= sns_headers(sub, "SubscriptionConfirmation", sub.id)
            status, error = await self._post(hook["endpoint"], body, headers)
            outcome = classify(status, error, attempt, policy)
            if outcome.action != "retry":
                return
            await asyncio.sleep(outcome.delay)

    def metric_families(self) -> Iterator[Metric]:
        """Per-subscription counters of this process (`herald_webhook_*`)."""
        labels = ["subscription", "endpoint"]
        docs = {
            "delivered": "Webhook deliveries answered 2xx",
            "retried": "Webhook attempts that failed and were scheduled again",
            "failed": "Webhook messages given up (exhausted retries or a 4xx)",
            "dead_lettered": "Webhook messages moved to the subscription's dead-letter queue",
        }
        for field, doc in docs.items():
            c = CounterMetricFamily(f"herald_webhook_{field}", doc, labels=labels)
            for sub_id, st in self.stats.items():
                c.add_metric([sub_id, st.endpoint], float(getattr(st, field)))
            yield c
        lat = SummaryMetricFamily(
            "herald_webhook_latency_seconds",
            "Publish-to-2xx seconds of delivered webhook messages",
            labels=labels,
        )
        for sub_id, st in self.stats.items():
            lat.add_metric([sub_id, st.endpoint], st.delivered, st.latency_sum_s)
        yield lat

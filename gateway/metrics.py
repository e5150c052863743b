"""Prometheus metrics, read from the engine's counters at scrape time.

Nothing is incremented on the hot path for Prometheus: the hub keeps plain ints
and a custom collector turns them into metric families when /metrics is read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.middleware import HttpMiddleware

if TYPE_CHECKING:
    from fanout.node import Node
    from gateway.edge import Edge

_QUEUE_GAUGES = {
    "visible": "Messages ready to be received",
    "in_flight": "Messages received and not yet acked",
    "delayed": "Messages waiting for their delay",
    "oldest_age_s": "Age of the oldest message in seconds",
}
_QUEUE_COUNTERS = {
    "sent_total": "Messages sent to the queue",
    "received_total": "Receives of messages",
    "deleted_total": "Messages acked (deleted)",
    "dead_lettered_total": "Messages moved to the dead-letter queue",
}


# /v1/stats key -> (Prometheus type, help). /metrics names them `herald_<key>`
# (counters get the exposition's `_total` suffix), so both views use the same names.
FIELDS: dict[str, tuple[str, str]] = {
    "ready": ("gauge", "1 when ready for traffic"),
    "draining": ("gauge", "1 while draining"),
    "connections": ("gauge", "Open WebSocket connections"),
    "connections_accepted": ("counter", "WebSocket connections accepted"),
    "subscriptions": ("gauge", "Local subscriptions"),
    "subscription_groups": ("gauge", "Local subscription groups"),
    "patterns": ("gauge", "Distinct subscription patterns"),
    "messages_published": ("counter", "Messages accepted by publish"),
    "messages_received": ("counter", "Messages this pod got to fan out"),
    "messages_delivered": ("counter", "Message deliveries to sockets"),
    "messages_dropped": ("counter", "Deliveries dropped (slow sockets)"),
    "frames_written": ("counter", "Broadcast frames written"),
    "batches": ("counter", "Batches flushed to subscription groups"),
    "slow_disconnects": ("counter", "Sockets closed as slow"),
    "lagged_notices": ("counter", "lagged frames sent"),
}
# The engine's own names for two of them.
_RENAMED = {"groups": "subscription_groups", "messages_in": "messages_received"}


async def stats_snapshot(node: Node, edge: Edge) -> dict[str, Any]:
    """The body of /v1/stats: every /metrics value, under the same name."""
    out: dict[str, Any] = {_RENAMED.get(k, k): v for k, v in node.stats().items()}
    out["connections"] = edge.connection_count
    out["connections_accepted"] = edge.connections_total
    if node.queues is not None:
        out["queues"] = await node.queues.stats()
    return out


class _Snapshot(Collector):
    def __init__(self, stats: dict[str, Any], node: Node) -> None:
        self.stats = stats
        self.node = node

    def collect(self) -> Iterator[Metric]:
        for key, value in self.stats.items():
            if isinstance(value, bool | int | float):
                kind, doc = FIELDS.get(key, ("gauge", key.replace("_", " ")))
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                yield family(f"herald_{key}", doc, value=float(value))
        flush = self.stats.get("publish_flush_seconds")
        if flush is not None:
            yield HistogramMetricFamily(
                "herald_publish_flush_seconds",
                "Publish (message ts) to flush to sockets, per batch's oldest message",
                buckets=[(le, float(n)) for le, n in flush["buckets"].items()],
                sum_value=flush["sum"],
            )
        for name, value in self.stats.get("backplane", {}).items():
            yield CounterMetricFamily(f"herald_backplane_{name}", f"Backplane {name}", value=value)
        svc = self.node.queues
        if svc is not None:
            refused = CounterMetricFamily(
                "herald_fanout_refused",
                "Fan-out copies a subscribed queue refused (full, too large); not the publisher's",
                labels=["queue"],
            )
            for q, n in svc.fanout_refused.items():
                refused.add_metric([q], float(n))
            yield refused
            webhooks = getattr(self.node, "webhooks", None)
            if webhooks is not None:
                yield from webhooks.metric_families()
        queues: dict[str, dict[str, Any]] = self.stats.get("queues") or {}
        if queues:
            for field, doc in _QUEUE_GAUGES.items():
                metric = "oldest_age_seconds" if field == "oldest_age_s" else field
                g = GaugeMetricFamily(f"herald_queue_{metric}", doc, labels=["queue"])
                for q, st in queues.items():
                    g.add_metric([q], float(st.get(field) or 0))
                yield g
            for field, doc in _QUEUE_COUNTERS.items():
                c = CounterMetricFamily(f"herald_queue_{field[:-6]}", doc, labels=["queue"])
                for q, st in queues.items():
                    c.add_metric([q], float(st.get(field) or 0))
                yield c


class Telemetry:
    """The process's Prometheus registry: process_* metrics and latency histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.http_latency = Histogram(
            "herald_http_request_duration_seconds",
            "HTTP request latency, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )


class RequestTimer(HttpMiddleware):
    """ASGI middleware: observe every HTTP request's latency (WebSockets bypass it)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        super().__init__(app)
        self.telemetry = telemetry

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = 500
        start = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The route template, not the path: queue names must not explode the labels.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.telemetry.http_latency.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - start
            )


async def render_metrics(node: Node, edge: Edge, telemetry: Telemetry) -> tuple[bytes, str]:
    """The Prometheus exposition of this process."""
    registry = CollectorRegistry()
    registry.register(_Snapshot(await stats_snapshot(node, edge), node))
    return generate_latest(registry) + generate_latest(telemetry.registry), CONTENT_TYPE_LATEST

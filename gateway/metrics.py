"""Prometheus metrics, read from the engine's counters at scrape time.

Nothing is incremented on the hot path for Prometheus: the hub keeps plain ints
and a custom collector turns them into metric families when /metrics is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

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


class _Snapshot(Collector):
    def __init__(self, node: Node, edge: Edge, queues: dict[str, dict[str, Any]]) -> None:
        self.node, self.edge, self.queues = node, edge, queues

    def collect(self) -> Iterator[Metric]:
        s = self.node.hub.stats
        yield GaugeMetricFamily(
            "herald_connections", "Open WebSocket connections", value=self.edge.connection_count
        )
        yield CounterMetricFamily(
            "herald_connections_accepted",
            "WebSocket connections accepted",
            value=self.edge.connections_total,
        )
        yield GaugeMetricFamily(
            "herald_subscriptions", "Local subscriptions", value=self.node.hub.subscription_count
        )
        yield GaugeMetricFamily(
            "herald_subscription_groups",
            "Local subscription groups",
            value=self.node.hub.group_count,
        )
        yield GaugeMetricFamily(
            "herald_ready", "1 when ready for traffic", value=int(self.node.ready())
        )
        yield CounterMetricFamily(
            "herald_messages_published",
            "Messages accepted by publish",
            value=self.node.published_total,
        )
        yield CounterMetricFamily(
            "herald_messages_received", "Messages this pod got to fan out", value=s.messages_in
        )
        yield CounterMetricFamily(
            "herald_messages_delivered", "Message deliveries to sockets", value=s.messages_delivered
        )
        yield CounterMetricFamily(
            "herald_messages_dropped", "Deliveries dropped (slow sockets)", value=s.messages_dropped
        )
        yield CounterMetricFamily(
            "herald_frames_written", "Broadcast frames written", value=s.frames_written
        )
        yield CounterMetricFamily(
            "herald_slow_disconnects", "Sockets closed as slow", value=s.slow_disconnects
        )
        for name, value in self.node.backplane.stats().items():
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
        if self.queues:
            for field, doc in _QUEUE_GAUGES.items():
                metric = "oldest_age_seconds" if field == "oldest_age_s" else field
                g = GaugeMetricFamily(f"herald_queue_{metric}", doc, labels=["queue"])
                for q, st in self.queues.items():
                    g.add_metric([q], float(st.get(field) or 0))
                yield g
            for field, doc in _QUEUE_COUNTERS.items():
                c = CounterMetricFamily(f"herald_queue_{field[:-6]}", doc, labels=["queue"])
                for q, st in self.queues.items():
                    c.add_metric([q], float(st.get(field) or 0))
                yield c


async def render_metrics(node: Node, edge: Edge) -> tuple[bytes, str]:
    """The Prometheus exposition of this process."""
    queues = await node.queues.stats() if node.queues is not None else {}
    registry = CollectorRegistry()
    registry.register(_Snapshot(node, edge, queues))
    return generate_latest(registry), CONTENT_TYPE_LATEST

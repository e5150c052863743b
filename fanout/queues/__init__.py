"""Durable queues (SQS semantics) and topic→queue subscriptions (SNS→SQS fanout).

One interface, `QueueService`, with two stores chosen at start-up:

- engine `memory`: an embedded SQLite file `data_dir/queues.db` (WAL, synchronous=FULL);
- engine `redis`: Redis (with AOF for durability), shared by every gateway process.

`QueueConsumer` feeds a WebSocket `consume` from it.
"""

from __future__ import annotations

import time
from pathlib import Path

from fanout.queues.consumer import QueueConsumer
from fanout.queues.service import Clock, QueueService, QueueSubscription

__all__ = ["QueueConsumer", "QueueService", "QueueSubscription", "open_queue_service"]


def open_queue_service(
    *,
    engine: str,
    data_dir: Path,
    redis_url: str,
    clock: Clock = time.time,
    namespace: str = "herald",
) -> QueueService:
    """Build the queue service for `engine` (call `start()` before use).

    `namespace` prefixes every Redis key, so several deployments (or tests) can
    share one Redis.
    """
    if engine == "memory":
        from fanout.queues.sqlite_store import SqliteQueueService

        return SqliteQueueService(Path(data_dir) / "queues.db", clock)
    if engine == "redis":
        from fanout.queues.redis_store import RedisQueueService

        return RedisQueueService(redis_url, clock, namespace=namespace)
    raise ValueError(f"unknown queue engine {engine!r} (expected 'memory' or 'redis')")

"""Herald's asyncio client: pub/sub with reconnect, resume and token refresh, queue
consumers, and a worker helper with an idempotency store. See docs/clients.md."""

from herald_client.client import HeraldClient, jwt_exp
from herald_client.consumer import Consumer, Job
from herald_client.errors import (
    ClientClosed,
    CommandError,
    ConnectionLost,
    HeraldClientError,
    OfflineQueueFull,
)
from herald_client.idempotency import IdempotencyStore, RedisIdempotency, SQLiteIdempotency
from herald_client.subscription import Subscription
from herald_client.worker import Worker

__all__ = [
    "ClientClosed",
    "CommandError",
    "ConnectionLost",
    "Consumer",
    "HeraldClient",
    "HeraldClientError",
    "IdempotencyStore",
    "Job",
    "OfflineQueueFull",
    "RedisIdempotency",
    "SQLiteIdempotency",
    "Subscription",
    "Worker",
    "jwt_exp",
]

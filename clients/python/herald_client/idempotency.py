"""Idempotency stores for `Worker`: remember which jobs finished, so a redelivered job
(at-least-once delivery) is acked without running its handler a second time.

A key goes through three states: absent → `running` (claimed, with a short TTL so a
crashed worker's claim expires) → `done` (with a long TTL). `claim` is atomic, so two
workers that get the same job at once never both run it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Literal, Protocol

Claim = Literal["new", "done", "busy"]


class IdempotencyStore(Protocol):
    async def claim(self, key: str, ttl: float) -> Claim:
        """Atomically claim `key` for `ttl` seconds: `new` (run it), `done` (finished
        before: skip it) or `busy` (another worker is running it now)."""
        ...

    async def complete(self, key: str) -> None:
        """Mark `key` finished (remembered for the store's TTL)."""
        ...

    async def release(self, key: str) -> None:
        """Forget a claim whose handler failed, so a retry runs it."""
        ...


class SQLiteIdempotency:
    """The embedded default: one SQLite file, shared safely by processes on one host."""

    def __init__(self, path: str | Path, ttl: float = 7 * 86400) -> None:
        self.ttl = ttl
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS herald_idempotency"
            " (key TEXT PRIMARY KEY, state TEXT NOT NULL, expires REAL NOT NULL)"
        )
        self._lock = threading.Lock()

    def _claim(self, key: str, ttl: float) -> Claim:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "DELETE FROM herald_idempotency WHERE key = ? AND expires < ?", (key, now)
                )
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO herald_idempotency VALUES (?, 'running', ?)",
                    (key, now + ttl),
                )
                if cur.rowcount == 1:
                    result: Claim = "new"
                else:
                    row = self._db.execute(
                        "SELECT state FROM herald_idempotency WHERE key = ?", (key,)
                    ).fetchone()
                    result = "done" if row and row[0] == "done" else "busy"
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return result

    def _set(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    async def claim(self, key: str, ttl: float) -> Claim:
        return await asyncio.to_thread(self._claim, key, ttl)

    async def complete(self, key: str) -> None:
        await asyncio.to_thread(
            self._set,
            "INSERT OR REPLACE INTO herald_idempotency VALUES (?, 'done', ?)",
            (key, time.time() + self.ttl),
        )

    async def release(self, key: str) -> None:
        await asyncio.to_thread(
            self._set, "DELETE FROM herald_idempotency WHERE key = ? AND state = 'running'", (key,)
        )

    def close(self) -> None:
        self._db.close()


class RedisIdempotency:
    """Redis `SET NX` with a TTL, for workers on many hosts.

    `redis` is a `redis.asyncio.Redis` (or any client with the same `set`/`get`/`delete`);
    `RedisIdempotency.from_url` builds one (needs the `redis` package).
    """

    def __init__(self, redis: Any, ttl: float = 7 * 86400, prefix: str = "herald:idem:") -> None:
        self.redis = redis
        self.ttl = ttl
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisIdempotency:
        import redis.asyncio  # optional: only this store needs it

        return cls(redis.asyncio.Redis.from_url(url), **kwargs)

    async def claim(self, key: str, ttl: float) -> Claim:
        k = self.prefix + key
        if await self.redis.set(k, "running", nx=True, px=max(1, int(ttl * 1000))):
            return "new"
        state = await self.redis.get(k)
        return "done" if state in (b"done", "done") else "busy"

    async def complete(self, key: str) -> None:
        await self.redis.set(self.prefix + key, "done", px=max(1, int(self.ttl * 1000)))

    async def release(self, key: str) -> None:
        await self.redis.delete(self.prefix + key)

    async def close(self) -> None:
        await self.redis.aclose()

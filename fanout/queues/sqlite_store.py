"""The embedded queue store: one SQLite file in WAL mode with synchronous=FULL.

Every operation is one `BEGIN IMMEDIATE … COMMIT` transaction run on a single
worker thread, so a state change of a message (claim, ack, move to the
dead-letter queue, redrive) either happened completely or not at all, and a
commit is on disk before the caller is answered (SPEC §6, engine `memory`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from fanout.queues.model import (
    DEDUP_WINDOW_S,
    Entry,
    QueueAttrs,
    decode_payload,
    empty_stats,
    new_receipt_base,
)
from fanout.queues.service import Clock, QueueService, QueueSubscription
from shared.errors import (
    HeraldError,
    PayloadTooLarge,
    QueueFull,
    QueueNotFound,
    ReceiptInvalid,
    StoreUnavailable,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    attrs TEXT NOT NULL,
    sent_total INTEGER NOT NULL DEFAULT 0,
    received_total INTEGER NOT NULL DEFAULT 0,
    deleted_total INTEGER NOT NULL DEFAULT 0,
    dead_lettered_total INTEGER NOT NULL DEFAULT 0
);
-- AUTOINCREMENT: seq never goes backwards, so it is the send order within a queue.
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    payload BLOB NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    group_id TEXT,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    inflight INTEGER NOT NULL DEFAULT 0,
    sent_at INTEGER NOT NULL,
    first_received_at INTEGER,
    visible_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    source TEXT,
    nodlq INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_id ON messages (queue, id);
CREATE INDEX IF NOT EXISTS messages_order ON messages (queue, priority DESC, seq);
CREATE INDEX IF NOT EXISTS messages_group ON messages (queue, group_id, seq);
CREATE INDEX IF NOT EXISTS messages_due ON messages (queue, visible_at);
CREATE INDEX IF NOT EXISTS messages_expiry ON messages (expires_at);
CREATE TABLE IF NOT EXISTS dedup (
    queue TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (queue, dedup_id)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    queue TEXT NOT NULL,
    filter_policy TEXT,
    created_at INTEGER NOT NULL
);
"""

_COLS = "seq, id, payload, receive_count, sent_at, first_received_at, nodlq, priority, group_id"
_STANDARD_NEXT = f"""
SELECT {_COLS} FROM messages WHERE queue = ? AND visible_at <= ?
ORDER BY priority DESC, seq LIMIT ?"""
# A FIFO group is available when its oldest message (its head) is visible.
_FIFO_NEXT = f"""
SELECT {_COLS} FROM messages WHERE seq IN (
    SELECT MIN(seq) FROM messages WHERE queue = ? GROUP BY group_id
) AND visible_at <= ? ORDER BY seq LIMIT ?"""
_INSERT = """
INSERT INTO messages (queue, id, payload, priority, group_id, receive_count, sent_at,
                      visible_at, expires_at, source)
VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"""


class SqliteQueueService(QueueService):
    """Queues in an embedded SQLite file (`data_dir/queues.db`)."""

    def __init__(self, path: Path, clock: Clock) -> None:
        super().__init__(clock)
        self._path = path
        self._conn: sqlite3.Connection | None = None
        # One thread owns the connection: SQLite calls block, and serializing them
        # is what a single writer needs anyway.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="herald-queues")

    # ---- plumbing -------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, fn, write)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("the queue store is closed")
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"queue store error: {exc}") from None

    async def _open(self) -> None:
        def connect() -> None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so an acknowledged send
            # survives a power cut, not only a process crash.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def _close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)

    async def ping(self) -> bool:
        try:
            return await self._run(
                lambda c: c.execute("SELECT 1").fetchone() is not None, write=False
            )
        except HeraldError:
            return False

    async def _housekeep(self) -> None:
        now = self.clock()

        def sweep(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM messages WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM dedup WHERE expires_at <= ?", (now,))

        await self._run(sweep)

    # ---- queues ---------------------------------------------------------------------

    @staticmethod
    def _attrs(conn: sqlite3.Connection, name: str) -> QueueAttrs | None:
        row = conn.execute("SELECT attrs FROM queues WHERE name = ?", (name,)).fetchone()
        return QueueAttrs.from_json(row[0]) if row else None

    @classmethod
    def _require(cls, conn: sqlite3.Connection, name: str) -> QueueAttrs:
        attrs = cls._attrs(conn, name)
        if attrs is None:
            raise QueueNotFound(f"queue {name!r} does not exist", details={"queue": name})
        return attrs

    async def _load_attrs(self, name: str) -> QueueAttrs | None:
        return await self._run(lambda c: self._attrs(c, name), write=False)

    async def _save_attrs(self, attrs: QueueAttrs) -> None:
        raw = attrs.to_json().decode()
        await self._run(
            lambda c: c.execute(
                "INSERT INTO queues (name, attrs) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET attrs = excluded.attrs",
                (attrs.name, raw),
            )
        )

    def _stats(self, conn: sqlite3.Connection, now: float) -> dict[str, dict[str, Any]]:
        conn.execute("DELETE FROM messages WHERE expires_at <= ?", (now,))
        out: dict[str, dict[str, Any]] = {}
        for row in conn.execute(
            "SELECT name, attrs, sent_total, received_total, deleted_total, dead_lettered_total"
            " FROM queues ORDER BY name"
        ):
            stats = empty_stats()
            stats.update(
                zip(
                    ("sent_total", "received_total", "deleted_total", "dead_lettered_total"),
                    row[2:],
                    strict=True,
                )
            )
            out[row[0]] = {**QueueAttrs.from_json(row[1]).as_dict(), **stats}
        for queue, visible, in_flight, delayed, oldest in conn.execute(
            "SELECT queue, SUM(visible_at <= ?1), SUM(visible_at > ?1 AND inflight = 1),"
            " SUM(visible_at > ?1 AND inflight = 0), MIN(sent_at) FROM messages GROUP BY queue",
            (now,),
        ):
            if queue in out:
                out[queue].update(
                    visible=visible,
                    in_flight=in_flight,
                    delayed=delayed,
                    oldest_age_s=round(max(now - oldest / 1000, 0.0), 3),
                )
        return out

    async def _get(self, name: str) -> dict[str, Any]:
        now = self.clock()

        def get(conn: sqlite3.Connection) -> dict[str, Any]:
            self._require(conn, name)
            return self._stats(conn, now)[name]

        return await self._run(get)

    async def _list(self) -> list[dict[str, Any]]:
        now = self.clock()
        return list((await self._run(lambda c: self._stats(c, now))).values())

    async def _all_stats(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        return await self._run(lambda c: self._stats(c, now))

    async def _delete(self, name: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            self._require(conn, name)
            conn.execute("DELETE FROM messages WHERE queue = ?", (name,))
            conn.execute("DELETE FROM dedup WHERE queue = ?", (name,))
            conn.execute("DELETE FROM queues WHERE name = ?", (name,))

        await self._run(delete)

    async def _purge(self, name: str) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            self._require(conn, name)
            return conn.execute("DELETE FROM messages WHERE queue = ?", (name,)).rowcount

        return await self._run(purge)

    # ---- sending --------------------------------------------------------------------

    def _insert(
        self, conn: sqlite3.Connection, attrs: QueueAttrs, entries: list[Entry], now: float
    ) -> list[dict[str, Any]]:
        name = attrs.name
        conn.execute("DELETE FROM messages WHERE queue = ? AND expires_at <= ?", (name, now))
        conn.execute("DELETE FROM dedup WHERE queue = ? AND expires_at <= ?", (name, now))
        depth = None
        if attrs.max_depth is not None:
            depth = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE queue = ?", (name,)
            ).fetchone()[0]
        results: list[dict[str, Any]] = []
        sent = 0
        for e in entries:
            key = e.dedup_id or (e.content_hash if attrs.content_dedup else None)
            if key is not None:
                row = conn.execute(
                    "SELECT msg_id FROM dedup WHERE queue = ? AND dedup_id = ?", (name, key)
                ).fetchone()
                if row is not None:
                    results.append({"id": row[0]})
                    continue
            if len(e.payload) > attrs.max_message_bytes:
                results.append(
                    {
                        "error": PayloadTooLarge(
                            f"message is {len(e.payload)} bytes; queue {name!r} takes at most "
                            f"{attrs.max_message_bytes}",
                            details={"queue": name},
                        )
                    }
                )
                continue
            if depth is not None and attrs.max_depth is not None:
                if depth >= attrs.max_depth:
                    results.append(
                        {
                            "error": QueueFull(
                                f"queue {name!r} holds its max_depth of {attrs.max_depth} messages",
                                details={"queue": name},
                            )
                        }
                    )
                    continue
                depth += 1
            delay = attrs.delay if e.delay is None else e.delay
            conn.execute(
                _INSERT,
                (
                    name,
                    e.id,
                    e.payload,
                    e.priority,
                    e.group_id,
                    int(now * 1000),
                    now + delay,
                    now + attrs.retention,
                    None,
                ),
            )
            if key is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO dedup VALUES (?, ?, ?, ?)",
                    (name, key, e.id, now + DEDUP_WINDOW_S),
                )
            sent += 1
            results.append({"id": e.id})
        if sent:
            conn.execute(
                "UPDATE queues SET sent_total = sent_total + ? WHERE name = ?", (sent, name)
            )
        return results

    async def _send(self, name: str, entries: list[Entry]) -> list[dict[str, Any]]:
        now = self.clock()
        results = await self._run(lambda c: self._insert(c, self._require(c, name), entries, now))
        self._wake(name)
        return results

    async def _enqueue(self, by_queue: dict[str, list[Entry]]) -> list[HeraldError]:
        now = self.clock()

        def enqueue(conn: sqlite3.Connection) -> list[HeraldError]:
            errors: list[HeraldError] = []
            for name, entries in by_queue.items():
                attrs = self._attrs(conn, name)
                if attrs is None:  # deleted since the subscription was read
                    continue
                errors += [
                    r["error"] for r in self._insert(conn, attrs, entries, now) if "error" in r
                ]
            return errors

        errors = await self._run(enqueue)
        for name in by_queue:
            self._wake(name)
        return errors

    # ---- receiving ------------------------------------------------------------------

    async def _receive_once(
        self, name: str, count: int, vt: float | None, wait_s: float
    ) -> tuple[list[dict[str, Any]], float | None]:
        now = self.clock()
        now_ms = int(now * 1000)
        base = new_receipt_base()
        woken: set[str] = set()

        def claim(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], float | None]:
            attrs = self._require(conn, name)
            conn.execute("DELETE FROM messages WHERE queue = ? AND expires_at <= ?", (name, now))
            timeout = attrs.visibility_timeout if vt is None else vt
            dl = attrs.dead_letter
            dlq = self._attrs(conn, dl.queue) if dl is not None else None
            query = _FIFO_NEXT if attrs.fifo else _STANDARD_NEXT
            out: list[dict[str, Any]] = []
            moved = 0
            while len(out) < count:
                want = count - len(out)
                rows = conn.execute(query, (name, now, want)).fetchall()
                moved_now = 0
                for seq, msg_id, payload, rc, sent_at, first, nodlq, prio, group in rows:
                    rc += 1
                    if (
                        dl is not None
                        and dlq is not None
                        and rc > dl.max_receive_count
                        and not nodlq
                    ):
                        # Counted against the receive that would exceed the limit: the
                        # message moves instead of being delivered, in this transaction.
                        conn.execute(
                            _INSERT,
                            (
                                dlq.name,
                                msg_id,
                                payload,
                                prio,
                                group,
                                sent_at,
                                now,
                                now + dlq.retention,
                                name,
                            ),
                        )
                        conn.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                        moved_now += 1
                        continue
                    token = f"{base}{len(out):x}"
                    first = first or now_ms
                    conn.execute(
                        "UPDATE messages SET receive_count = ?, receipt = ?, inflight = 1,"
                        " first_received_at = ?, visible_at = ? WHERE seq = ?",
                        (rc, token, first, now + timeout, seq),
                    )
                    body, attributes = decode_payload(payload)
                    out.append(
                        {
                            "id": msg_id,
                            "receipt": f"{msg_id}.{token}",
                            "body": body,
                            "attributes": attributes,
                            "receive_count": rc,
                            "sent_at": sent_at,
                            "first_received_at": first,
                        }
                    )
                moved += moved_now
                if not rows or (moved_now == 0 and len(rows) < want):
                    break
            if moved and dl is not None:
                woken.add(dl.queue)
            conn.execute(
                "UPDATE queues SET received_total = received_total + ?,"
                " dead_lettered_total = dead_lettered_total + ? WHERE name = ?",
                (len(out), moved, name),
            )
            row = conn.execute(
                "SELECT MIN(visible_at) FROM messages WHERE queue = ? AND visible_at > ?",
                (name, now),
            ).fetchone()
            return out, row[0]

        result = await self._run(claim)
        for q in woken:
            self._wake(q)
        return result

    async def _ack(self, name: str, pairs: list[tuple[str, str]]) -> list[bool]:
        def ack(conn: sqlite3.Connection) -> list[bool]:
            self._require(conn, name)
            oks = [
                conn.execute(
                    "DELETE FROM messages WHERE queue = ? AND id = ? AND receipt = ?",
                    (name, msg_id, token),
                ).rowcount
                > 0
                for msg_id, token in pairs
            ]
            conn.execute(
                "UPDATE queues SET deleted_total = deleted_total + ? WHERE name = ?",
                (sum(oks), name),
            )
            return oks

        oks = await self._run(ack)
        if any(oks):
            self._wake(name)  # a FIFO group may have been unblocked
        return oks

    async def _change_visibility(
        self, name: str, msg_id: str, token: str, seconds: float, *, release: bool
    ) -> None:
        now = self.clock()

        def change(conn: sqlite3.Connection) -> None:
            self._require(conn, name)
            row = conn.execute(
                "SELECT seq FROM messages WHERE queue = ? AND id = ? AND receipt = ?"
                " AND inflight = 1 AND visible_at > ?",
                (name, msg_id, token, now),
            ).fetchone()
            if row is None:
                raise ReceiptInvalid("receipt is not the latest of an in-flight message")
            if release:
                conn.execute(
                    "UPDATE messages SET inflight = 0, receipt = NULL, visible_at = ?"
                    " WHERE seq = ?",
                    (now + seconds, row[0]),
                )
            else:
                conn.execute(
                    "UPDATE messages SET visible_at = ? WHERE seq = ?", (now + seconds, row[0])
                )

        await self._run(change)
        if seconds == 0:
            self._wake(name)

    async def _redrive(self, dlq: str) -> int:
        now = self.clock()
        woken: set[str] = set()

        def redrive(conn: sqlite3.Connection) -> int:
            self._require(conn, dlq)
            sources: dict[str, QueueAttrs | None] = {}
            moved = 0
            rows = conn.execute(
                "SELECT seq, id, payload, priority, group_id, sent_at, source FROM messages"
                " WHERE queue = ? AND source IS NOT NULL AND NOT (inflight = 1 AND visible_at > ?)"
                " ORDER BY seq",
                (dlq, now),
            ).fetchall()
            for seq, msg_id, payload, prio, group, sent_at, source in rows:
                if source not in sources:
                    sources[source] = self._attrs(conn, source)
                target = sources[source]
                if target is None:  # source deleted: the message stays dead-lettered
                    continue
                conn.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                conn.execute(
                    _INSERT,
                    (
                        source,
                        msg_id,
                        payload,
                        prio,
                        group,
                        sent_at,
                        now,
                        now + target.retention,
                        None,
                    ),
                )
                woken.add(source)
                moved += 1
            return moved

        moved = await self._run(redrive)
        for q in woken:
            self._wake(q)
        return moved

    # ---- subscriptions ----------------------------------------------------------------

    async def _load_subscriptions(self) -> list[QueueSubscription]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT id, topic, queue, filter_policy, created_at FROM subscriptions"
            ).fetchall(),
            write=False,
        )
        return [
            QueueSubscription(r[0], r[1], r[2], orjson.loads(r[3]) if r[3] else None, r[4])
            for r in rows
        ]

    async def _save_subscription(self, sub: QueueSubscription) -> None:
        policy = orjson.dumps(sub.filter_policy).decode() if sub.filter_policy else None
        await self._run(
            lambda c: c.execute(
                "INSERT INTO subscriptions VALUES (?, ?, ?, ?, ?)",
                (sub.id, sub.topic, sub.queue, policy, sub.created_at),
            )
        )

    async def _delete_subscription(self, sub_id: str) -> bool:
        return await self._run(
            lambda c: c.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,)).rowcount > 0
        )

"""The Redis queue store: shared by every gateway process (engine `redis`).

Every message state change is one Lua script on one queue's keys (see
`redis_scripts`, `redis_keys`). Moves between queues (dead-letter, redrive) are
two steps across two hash slots, made safe by an outbox: the source atomically
moves the message into its outbox, the destination imports it idempotently (a
move id it has seen is a no-op), then the outbox entry is dropped. A crash in
between leaves the entry in the outbox, and the next drain finishes the move,
neither losing nor duplicating the message.

Long polling: a receive that finds nothing marks the queue as `waiting`; a send
on any process then publishes on the queue's wake channel, which every process
listens to (one PSUBSCRIBE), so a waiting receive returns as soon as a message
arrives, wherever it was sent.

Redis Cluster (detected with `INFO cluster`, or forced by a `redis+cluster://`
URL, as for the backplane): every script is single-slot (a queue's keys share
`{q:<name>}`, the subscription registry and its version share `{<ns>:global}`);
batches of scripts go through a non-transactional cluster pipeline (one round
trip per node; a script a node lacks is run again alone, which loads it); the
wake-up listener PSUBSCRIBEs on one node, since a cluster broadcasts classic
PUBLISH to every node, and moves to another node when that one fails.

Redis errors become `StoreUnavailable` here (`fanout.redis.errors`). Scripts
are never retried automatically after a connection error (the script may have
run): the caller gets a 503 and retries, and a send with a `dedup_id` is then not
duplicated. A NOSCRIPT reply (the script did not run) loads the scripts and runs
it again (`fanout.redis.runner`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.exceptions import RedisError

from fanout.queues.model import (
    Entry,
    QueueAttrs,
    decode_payload,
    empty_stats,
    new_receipt_base,
)
from fanout.queues.redis_keys import META, OUTBOX, RedisKeys
from fanout.queues.redis_scripts import GLOBAL_SCRIPTS, RUNNER, SCRIPTS
from fanout.queues.service import Clock, QueueService, QueueSubscription
from fanout.redis.connect import Backoff, RedisURL, detect_cluster, no_retry
from fanout.redis.errors import REDIS_ERRORS, translate, translated
from shared.errors import (
    HeraldError,
    PayloadTooLarge,
    QueueFull,
    QueueNotFound,
    ReceiptInvalid,
    StoreUnavailable,
)

log = logging.getLogger("herald.queues.redis")
T = TypeVar("T")

_REDRIVE_PAGE = 500
_WHAT = "the Redis queue store"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisQueueService(QueueService):
    """Queues in Redis (use AOF with `appendfsync always` and `noeviction`)."""

    def __init__(self, url: str, clock: Clock, *, namespace: str = "herald") -> None:
        super().__init__(clock)
        self._namespace = namespace
        self._target = RedisURL.parse(url)
        # Unlike the backplane, no default pool cap: a queue store's connections are
        # per concurrent request, and RedisCluster's pool does not block.
        self._client_kwargs: dict[str, Any] = {"retry": no_retry()}
        if self._target.max_connections is not None:
            self._client_kwargs["max_connections"] = self._target.max_connections
        # The client is chosen again at start-up (`_open`), once `INFO cluster` answered.
        self._redis: Redis | RedisCluster = (
            self._new_cluster() if self._target.cluster else self._new_single()
        )
        self._bind()
        self._listener: asyncio.Task[None] | None = None
        self._listen_client: Redis | None = None
        self._closing = False
        self._subs_version: bytes | None = None

    @property
    def cluster(self) -> bool:
        return isinstance(self._redis, RedisCluster)

    def _new_single(self) -> Redis:
        return Redis.from_url(self._target.url, **self._client_kwargs)

    def _new_cluster(self) -> RedisCluster:
        # No retries: a script must never run twice because the driver resent it
        # (redirections, MOVED / ASK, are still followed: the script did not run).
        return RedisCluster.from_url(self._target.url, **self._client_kwargs)

    def _bind(self) -> None:
        """Key names for the current client (hash tags only on a cluster)."""
        self.keys = RedisKeys(self._namespace, cluster=self.cluster)

    # ---- plumbing -------------------------------------------------------------------

    async def _io(self, call: Awaitable[T]) -> T:
        with translated(StoreUnavailable, _WHAT):
            return await call

    def _argv(self, name: str, args: list[Any]) -> list[Any]:
        now = self.clock()
        return [self.keys.wake_channel(name), repr(now), int(now * 1000), *args]

    async def _script(self, script: str, name: str, args: list[Any]) -> Any:
        return await self._io(
            RUNNER.run(self._redis, SCRIPTS[script], self.keys.queue(name), self._argv(name, args))
        )

    async def _script_batch(self, calls: list[tuple[str, str, list[Any]]]) -> list[Any]:
        """Run queue scripts (script, queue, args) in one pipelined round trip.

        On a cluster, one round trip per node: the raw EVALSHA is routed by its keys.
        Any error but NOSCRIPT (the runner loads and runs those again) fails the batch.
        """
        raw = await self._io(
            RUNNER.pipeline(
                self._redis,
                [
                    (SCRIPTS[script], self.keys.queue(name), self._argv(name, args))
                    for script, name, args in calls
                ],
            )
        )
        for res in raw:
            if isinstance(res, Exception):
                raise translate(res, StoreUnavailable, _WHAT)
        return raw

    async def _global_script(self, script: str, args: list[Any]) -> Any:
        keys = [self.keys.subscriptions, self.keys.subscriptions_version]
        return await self._io(RUNNER.run(self._redis, GLOBAL_SCRIPTS[script], keys, args))

    async def _open(self) -> None:
        if isinstance(self._redis, Redis) and await self._io(detect_cluster(self._target)):
            await self._redis.aclose()
            self._redis = self._new_cluster()
            self._bind()
        if isinstance(self._redis, RedisCluster):
            await self._io(self._redis.initialize())
        await self._io(RUNNER.load(self._redis))  # on every primary of a cluster
        self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(*REDIS_ERRORS):
            for policy in await self._eviction_policies():
                if policy not in (None, b"noeviction"):
                    log.warning(
                        "Redis maxmemory-policy is %r: queue messages may be evicted; "
                        "use noeviction",
                        policy,
                    )
                    break
        await self._drain_all()

    async def _eviction_policies(self) -> list[Any]:
        if isinstance(self._redis, Redis):
            config: dict[Any, Any] = await self._redis.config_get("maxmemory-policy")
            return [config.get(b"maxmemory-policy")]
        policies: list[Any] = []
        for node in self._redis.get_primaries():
            per_node: dict[Any, Any] = await self._redis.config_get(
                "maxmemory-policy", target_nodes=node
            )
            policies.append(per_node.get(b"maxmemory-policy"))
        return policies

    async def _close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            done, _ = await asyncio.wait({self._listener}, timeout=1.0)
            if not done and self._listen_client is not None:
                # A redis-py read that swallowed the cancellation: cut its connection.
                log.warning("queue wake-up listener ignored cancellation; closing its connection")
                with contextlib.suppress(Exception):
                    await self._listen_client.aclose()
                await asyncio.wait({self._listener}, timeout=1.0)
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            if isinstance(self._redis, RedisCluster):  # every slot must answer
                return bool(await self._redis.ping(target_nodes=RedisCluster.PRIMARIES))
            return bool(await self._redis.ping())
        except REDIS_ERRORS:
            return False

    def _pubsub_client(self, avoid: str | None) -> tuple[Redis, str]:
        """A client of its own for the listener, and the address it talks to.

        Its own, not the command pool: a pub/sub connection handed back to a shared
        pool after a Redis restart could end up read by two tasks at once (seen as
        a listener that ignores cancellation, so `close()` hung). On a cluster, which
        broadcasts classic PUBLISH to every node, any one node hears every wake-up:
        pick one at random, another than the one that just failed.
        """
        if isinstance(self._redis, Redis):
            return Redis.from_url(self._target.url, retry=no_retry()), self._target.url
        nodes = self._redis.get_nodes()
        others = [n for n in nodes if n.name != avoid] or nodes
        if not others:
            raise RedisError("no Redis Cluster node known")
        node = random.choice(others)
        pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
        return Redis.from_pool(pool), node.name

    async def _listen(self) -> None:
        """Wake local waiters on sends anywhere; reload subscriptions when they change."""
        failed: str | None = None
        backoff = Backoff(high=0.5)
        while not self._closing:
            try:
                client, where = self._pubsub_client(failed)
            except RedisError as exc:
                log.warning("queue wake-up listener has no Redis node (%s); retrying", exc)
                await backoff.sleep()
                continue
            self._listen_client = client
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self.keys.wake_pattern)
                await pubsub.subscribe(self.keys.subscriptions_channel)
                backoff.reset()
                async for msg in pubsub.listen():
                    channel = _text(msg["channel"])
                    if msg["type"] == "pmessage":
                        self._wake(self.keys.queue_of_wake_channel(channel))
                    elif channel == self.keys.subscriptions_channel:
                        with contextlib.suppress(HeraldError):
                            self._install_subscriptions(await self._load_subscriptions())
            except REDIS_ERRORS as exc:
                # Waiters fall back to polling every tick until we are back.
                log.warning("queue wake-up listener lost Redis (%s); retrying", exc)
                failed = where
                await backoff.sleep()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _housekeep(self) -> None:
        version = await self._io(self._redis.get(self.keys.subscriptions_version))
        if version != self._subs_version:
            self._install_subscriptions(await self._load_subscriptions())
        await self._all_stats()  # each stats script also expires and promotes
        await self._drain_all()

    # ---- outbox moves ----------------------------------------------------------------

    async def _drain_all(self) -> None:
        names = await self._names()
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hlen(self.keys.queue(name)[OUTBOX])  # one round trip (per node)
        for name, pending in zip(names, await self._io(pipe.execute()), strict=True):
            if pending:
                await self._drain(name)

    async def _drain(self, name: str) -> tuple[dict[str, int], int]:
        """Finish the moves waiting in `name`'s outbox: (landed by kind, put back)."""
        outbox = self.keys.queue(name)[OUTBOX]
        landed: dict[str, int] = {}
        restored = 0
        for move_id, raw in (await self._io(self._redis.hgetall(outbox))).items():
            rec = orjson.loads(raw)
            result = _text(await self._script("import", rec["dest"], [move_id, raw, rec["kind"]]))
            if result in ("ok", "dup"):
                await self._io(self._redis.hdel(outbox, move_id))
                if result == "ok":
                    landed[rec["kind"]] = landed.get(rec["kind"], 0) + 1
            elif result == "notfound":  # destination deleted: the message goes back
                restored += (
                    _text(await self._script("import", name, [move_id, "", "restore"])) == "ok"
                )
        return landed, restored

    # ---- queues ---------------------------------------------------------------------

    async def _names(self) -> list[str]:
        return sorted(_text(n) for n in await self._io(self._redis.smembers(self.keys.registry)))

    async def _load_attrs(self, name: str) -> QueueAttrs | None:
        raw = await self._io(self._redis.hget(self.keys.queue(name)[META], "attrs"))
        return QueueAttrs.from_json(raw) if raw else None

    async def _save_attrs(self, attrs: QueueAttrs) -> None:
        # Registry first: a crash in between leaves a listed name without a queue
        # (skipped when listing), never a queue that cannot be listed.
        await self._io(self._redis.sadd(self.keys.registry, attrs.name))
        await self._io(
            self._redis.hset(self.keys.queue(attrs.name)[META], "attrs", attrs.to_json())
        )

    def _parse_stats(self, raw: Any) -> dict[str, Any] | None:
        if not raw:
            return None
        attrs = QueueAttrs.from_json(raw[0])
        stats = empty_stats()
        oldest = _text(raw[4])
        stats.update(
            visible=int(raw[1]),
            in_flight=int(raw[2]),
            delayed=int(raw[3]),
            oldest_age_s=round(max(self.clock() - int(oldest) / 1000, 0.0), 3) if oldest else 0.0,
            sent_total=int(raw[5]),
            received_total=int(raw[6]),
            deleted_total=int(raw[7]),
            dead_lettered_total=int(raw[8]),
        )
        return {**attrs.as_dict(), **stats}

    async def _get(self, name: str) -> dict[str, Any]:
        stats = self._parse_stats(await self._script("stats", name, []))
        if stats is None:
            raise QueueNotFound(f"queue {name!r} does not exist", details={"queue": name})
        return stats

    async def _all_stats(self) -> dict[str, dict[str, Any]]:
        names = await self._names()
        results = await self._script_batch([("stats", name, []) for name in names])
        out: dict[str, dict[str, Any]] = {}
        for name, raw in zip(names, results, strict=True):
            stats = self._parse_stats(raw)
            if stats is not None:
                out[name] = stats
        return out

    async def _list(self) -> list[dict[str, Any]]:
        return list((await self._all_stats()).values())

    async def _delete(self, name: str) -> None:
        await self._drain(name)
        if not await self._script("delete", name, []):
            raise QueueNotFound(f"queue {name!r} does not exist", details={"queue": name})
        await self._io(self._redis.srem(self.keys.registry, name))

    async def _purge(self, name: str) -> int:
        n = int(await self._script("purge", name, []))
        if n < 0:
            raise QueueNotFound(f"queue {name!r} does not exist", details={"queue": name})
        return n

    # ---- sending --------------------------------------------------------------------

    @staticmethod
    def _send_args(entries: list[Entry]) -> list[Any]:
        args: list[Any] = []
        for e in entries:
            args += [
                e.id,
                e.payload,
                e.priority,
                "" if e.delay is None else repr(e.delay),
                e.group_id or "",
                e.dedup_id or "",
                e.content_hash or "",
            ]
        return args

    @staticmethod
    def _send_results(name: str, raw: list[Any]) -> list[dict[str, Any]]:
        if raw and _text(raw[0]) == "notfound":
            raise QueueNotFound(f"queue {name!r} does not exist", details={"queue": name})
        results: list[dict[str, Any]] = []
        for kind, value in zip(raw[::2], raw[1::2], strict=True):
            k = _text(kind)
            if k == "id":
                results.append({"id": _text(value)})
            elif k == "payload_too_large":
                results.append(
                    {
                        "error": PayloadTooLarge(
                            f"message is {_text(value)} bytes, "
                            f"over max_message_bytes of queue {name!r}",
                            details={"queue": name},
                        )
                    }
                )
            else:
                results.append(
                    {
                        "error": QueueFull(
                            f"queue {name!r} holds its max_depth of messages",
                            details={"queue": name},
                        )
                    }
                )
        return results

    async def _send(self, name: str, entries: list[Entry]) -> list[dict[str, Any]]:
        raw = await self._script("send", name, self._send_args(entries))
        self._wake(name)
        return self._send_results(name, raw)

    async def _enqueue(self, by_queue: dict[str, list[Entry]]) -> list[HeraldError]:
        # One script per queue, all in one pipelined round trip.
        names = list(by_queue)
        results = await self._script_batch(
            [("send", name, self._send_args(by_queue[name])) for name in names]
        )
        errors: list[HeraldError] = []
        for name, raw in zip(names, results, strict=True):
            self._wake(name)
            with contextlib.suppress(QueueNotFound):  # deleted since subscribing
                errors += [r["error"] for r in self._send_results(name, raw) if "error" in r]
        return errors

    # ---- receiving ------------------------------------------------------------------

    async def _receive_once(
        self, name: str, count: int, vt: float | None, wait_s: float
    ) -> tuple[list[dict[str, Any]], float | None]:
        wait_ms = int(wait_s * 1000) + 1000 if wait_s > 0 else 0
        raw = await self._script(
            "receive",
            name,
            [name, count, "" if vt is None else repr(vt), new_receipt_base(), wait_ms],
        )
        if _text(raw[0]) == "notfound":
            raise QueueNotFound(f"queue {name!r} does not exist", details={"queue": name})
        next_due, moved, flat = raw
        msgs: list[dict[str, Any]] = []
        for i in range(0, len(flat), 6):
            msg_id, token, payload, rc, sent_at, first = flat[i : i + 6]
            body, attributes = decode_payload(payload)
            msgs.append(
                {
                    "id": _text(msg_id),
                    "receipt": f"{_text(msg_id)}.{_text(token)}",
                    "body": body,
                    "attributes": attributes,
                    "receive_count": int(rc),
                    "sent_at": int(sent_at),
                    "first_received_at": int(first),
                }
            )
        due = _text(next_due)
        if moved and (await self._drain(name))[1] and len(msgs) < count:
            # Its dead-letter queue was gone, so the message came back: deliver it now.
            more, _ = await self._receive_once(name, count - len(msgs), vt, wait_s)
            msgs += more
        return msgs, float(due) if due else None

    async def _ack(self, name: str, pairs: list[tuple[str, str]]) -> list[bool]:
        raw = await self._script("ack", name, [x for pair in pairs for x in pair])
        if raw and _text(raw[0]) == "notfound":
            raise QueueNotFound(f"queue {name!r} does not exist", details={"queue": name})
        return [bool(int(x)) for x in raw]

    async def _change_visibility(
        self, name: str, msg_id: str, token: str, seconds: float, *, release: bool
    ) -> None:
        result = _text(
            await self._script(
                "change_visibility", name, [msg_id, token, repr(seconds), "1" if release else "0"]
            )
        )
        if result == "notfound":
            raise QueueNotFound(f"queue {name!r} does not exist", details={"queue": name})
        if result == "invalid":
            raise ReceiptInvalid("receipt is not the latest of an in-flight message")
        if seconds == 0:
            self._wake(name)

    async def _redrive(self, dlq: str) -> int:
        cursor = 0
        while True:
            scanned, cursor, _ = await self._script(
                "redrive", dlq, [new_receipt_base(), _REDRIVE_PAGE, cursor]
            )
            if scanned < 0:
                raise QueueNotFound(f"queue {dlq!r} does not exist", details={"queue": dlq})
            if scanned < _REDRIVE_PAGE:
                break
        landed, _ = await self._drain(dlq)
        return landed.get("redrive", 0)

    # ---- subscriptions ----------------------------------------------------------------

    async def _load_subscriptions(self) -> list[QueueSubscription]:
        # One script, not MULTI: on a cluster both keys share `{<ns>:global}`.
        version, flat = await self._global_script("subs_load", [])
        self._subs_version = version
        return [QueueSubscription(**orjson.loads(v)) for v in flat[1::2]]

    async def _change_subscription(self, op: str, sub_id: str, value: bytes = b"") -> int:
        """Set or delete one subscription, bump the version and announce it, atomically."""
        args = [self.keys.subscriptions_channel, op, sub_id, value]
        return int(await self._global_script("subs_change", args))

    async def _save_subscription(self, sub: QueueSubscription) -> None:
        await self._change_subscription("set", sub.id, orjson.dumps(sub.as_dict()))

    async def _delete_subscription(self, sub_id: str) -> bool:
        return bool(await self._change_subscription("del", sub_id))

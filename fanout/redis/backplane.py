"""RedisBackplane: many gateway processes sharing one Redis or Redis Cluster.

Publishing pod: the envelope is encoded once (`Node.prepare`); each message is one
EVALSHA of the publish script (history, offsets, idempotency, PUBLISH, atomically)
or plain PUBLISH commands when it needs none of those, and everything that
concurrent publish calls queue meanwhile goes out in one pipeline (one round trip).

Receiving pod: subscribes only to the channels its local subscribers need
(`keys.interest_channel`): the exact-topic channel of a concrete pattern, or the
prefix channel of a wildcard pattern. A payload is decoded once per pod
(`Message.from_envelope`) and handed to the hub, which matches patterns and
filters locally. A pod that watches overlapping channels (a topic and a wildcard
over it) gets some messages twice and drops the copy by (topic, id, offset).

On Redis Cluster (detected, or forced with a `redis+cluster://` URL): sharded
pub/sub (SPUBLISH/SSUBSCRIBE), topic keys and the exact-topic channel share the
`{topic}` hash tag so the script is single-slot; prefix channels live in their
own slots and are SPUBLISHed by the pod after the script returned the envelope.

Failure (docs/redis.md, Failure and recovery): a health ping every 0.5 s and the
listener's own liveness drive
`ready()`; publish and history raise `BackplaneUnavailable` (HTTP 503) instead of
dropping anything silently. After an outage the pod stays unready, and refuses
publishes, until every lost subscription is confirmed again; history topics then
replay what other pods published meanwhile (`recovery.py`). See docs/redis.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import ssl
import time
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import parse_url
from redis.maint_notifications import MaintNotificationsConfig

from fanout.backplane import (
    Backplane,
    Deliver,
    HistoryPage,
    OnGap,
    PublishItem,
    PublishOutcome,
    RuleLookup,
)
from fanout.message import Message
from fanout.redis import keys, scripts
from fanout.redis.connect import Backoff, RedisURL, detect_cluster, no_retry, stop_tasks
from fanout.redis.errors import REDIS_ERRORS, unavailable
from fanout.redis.listener import Addr, Endpoint, Listener
from fanout.redis.publisher import IDLE_EXPIRY_S, Publisher
from fanout.redis.recovery import REPLAY_LIMIT, ReadHistory, Recovery
from fanout.redis.registry import HEARTBEAT_S, MEMBER_TTL_S, PrefixRegistry
from fanout.redis.wire import CommandWire, encode_command
from shared.config import HistoryRule
from shared.errors import BackplaneUnavailable, HeraldError
from shared.topics import is_wildcard

log = logging.getLogger("herald.redis")

POOL_SIZE = 16  # command connections per node; pub/sub has its own (one per node)
HEALTH_INTERVAL_S = 0.5
HEALTH_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 1.0
SUBSCRIBE_WAIT_S = 2.0  # a resume waits this long for its live subscription
DEDUP_WINDOW_S = 10.0
DEDUP_MAX = 100_000
REPLAY_CONCURRENCY = 16  # held topics whose history is read at once after an outage
# A replay retries through these.
_REPLAY_ERRORS: tuple[type[Exception], ...] = (HeraldError, *REDIS_ERRORS)


class RedisBackplane(Backplane):
    """Routes messages between gateway processes through Redis pub/sub."""

    name = "redis"
    live_is_immediate = False

    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        self._target = RedisURL.parse(url)
        self._url = self._target.url
        self._pool_size = pool_size or self._target.max_connections or POOL_SIZE
        self.pod = secrets.token_hex(6)
        self._cmd: Any = None  # Redis or RedisCluster once connected
        self._cluster = False
        self._pub = "PUBLISH"
        self._deliver: Deliver | None = None
        self._listener = Listener(self._on_pubsub)
        self._listener.on_outage = self._on_outage
        self._listener.on_reconnect = self._on_reconnect
        self._listener.on_lost = self._on_lost
        self._listener.on_restored = self._on_restored
        self._recovery = Recovery()
        self._replay_task: asyncio.Task[None] | None = None
        self._history_rule: RuleLookup = lambda topic: None
        self._on_gap: OnGap | None = None
        self._registry = PrefixRegistry(self.pod)
        self._notices: list[tuple[str, str]] = []  # (+/-, prefix) to announce
        self._wake_registry = asyncio.Event()
        self._reannounce = False
        self._announcing: dict[str, asyncio.Future[None]] = {}  # "+" notices not yet sent
        self._refreshing: list[bytes] | None = None
        self._booted = asyncio.Event()
        self._cmd_ok = False
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._copies: dict[str, int] = {}  # topic -> channels of ours it arrives on
        self._seen: dict[tuple[str, str, int | None], float] = {}
        self._closed = False
        self.counters = {
            "messages_in": 0,
            "messages_out": 0,
            "reconnects": 0,
            "resubscribes": 0,
            "duplicates_dropped": 0,
            "publish_errors": 0,
            "replayed": 0,
            "gaps": 0,
        }
        self._publisher = Publisher(self._registry, self.counters)

    # ---- lifecycle -----------------------------------------------------------------

    def attach(self, history_rule: RuleLookup, on_gap: OnGap) -> None:
        self._history_rule = history_rule
        self._on_gap = on_gap

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._listener.add(keys.CONTROL_CHANNEL)
        self._tasks.append(asyncio.create_task(self._boot(), name="herald-redis-boot"))
        # A reachable Redis makes the pod ready at once; an unreachable one does not
        # stop it from starting (it stays unready and keeps trying).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._booted.wait()

    async def close(self) -> None:
        self._closed = True
        self._deliver = None
        await stop_tasks([*self._tasks, *self._background])
        self._tasks = []
        await self._listener.close()
        self._publisher.reset()
        if self._cmd is not None:
            members = self._registry.own_members()
            if members and self._cmd_ok:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(0.5):
                        await self._cmd.zrem(keys.PREFIXES_KEY, *members)
            with contextlib.suppress(Exception):
                await self._cmd.aclose()
            self._cmd = None

    async def _boot(self) -> None:
        backoff = Backoff()
        while not self._closed:
            try:
                await self._open()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis: cannot connect to %s: %s (retrying)", self._url, exc)
                await backoff.sleep()
        if self._closed:
            return
        self._cmd_ok = True
        self._listener.start()
        self._tasks.append(asyncio.create_task(self._health_loop(), name="herald-redis-health"))
        self._tasks.append(asyncio.create_task(self._registry_loop(), name="herald-redis-registry"))
        self._booted.set()
        log.info("redis backplane: %s (%s)", self._url, "cluster" if self._cluster else "single")

    async def _open(self) -> None:
        common: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_timeout": COMMAND_TIMEOUT_S,
            "retry": no_retry(),
            # Redis < 8 answers the driver's CLIENT MAINT_NOTIFICATIONS probe with an
            # error, one wasted round trip per new connection.
            "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        }
        cluster = await detect_cluster(self._target, **common)
        conn = parse_url(self._url)
        wire: CommandWire | None = None
        ssl_ctx = ssl.create_default_context() if self._target.tls else None
        endpoint = Endpoint(conn.get("username"), conn.get("password"), ssl_ctx)
        if cluster:
            client: Any = RedisCluster.from_url(
                self._url, max_connections=self._pool_size, **common
            )
            try:
                await client.initialize()
            except BaseException:
                await client.aclose()
                raise

            def route(channel: bytes) -> Addr:
                node = client.get_node_from_key(channel)
                return (node.host, int(node.port))

            async def refresh() -> None:
                await client.nodes_manager.initialize()

            self._listener.configure(route=route, endpoint=endpoint, sharded=True, refresh=refresh)
            self._pub = "SPUBLISH"
        else:
            pool = BlockingConnectionPool.from_url(
                self._url, max_connections=self._pool_size, timeout=COMMAND_TIMEOUT_S, **common
            )
            client = Redis.from_pool(pool)  # closing the client closes the pool
            try:
                await client.ping()
            except BaseException:
                await client.aclose()
                raise
            addr = (str(conn.get("host", "127.0.0.1")), int(conn.get("port", 6379)))
            self._listener.configure(route=lambda _ch: addr, endpoint=endpoint)
            if "path" not in conn:  # TCP, not a unix socket: publishes skip the driver
                hello = [endpoint.handshake()] if endpoint.password is not None else []
                if conn.get("db"):
                    hello.append(encode_command("SELECT", int(conn["db"])))
                wire = CommandWire(
                    addr[0],
                    addr[1],
                    handshake=hello,
                    ssl_context=ssl_ctx,
                    connect_timeout_s=CONNECT_TIMEOUT_S,
                    timeout_s=COMMAND_TIMEOUT_S,
                )
        self._cmd = client
        self._cluster = cluster
        self._publisher.configure(client, cluster=cluster, wire=wire)
        await scripts.RUNNER.load(client)

    @property
    def command_client(self) -> Any:
        """The command client (Redis or RedisCluster), None until connected."""
        return self._cmd

    def _require(self) -> Any:
        if self._cmd is None or not self._cmd_ok or self._closed:
            raise BackplaneUnavailable("the Redis backplane is unreachable")
        return self._cmd

    # ---- health --------------------------------------------------------------------------

    def ready(self) -> bool:
        return self._booted.is_set() and self._cmd_ok and self._listener.healthy()

    async def _health_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            try:
                async with asyncio.timeout(HEALTH_TIMEOUT_S):
                    if self._cluster:
                        await self._cmd.ping(target_nodes=RedisCluster.PRIMARIES)
                    else:
                        await self._cmd.ping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._cmd_ok:
                    log.warning("redis: health check failed: %s", exc or type(exc).__name__)
                    self._cmd_ok = False
                    await self._reset_pool()
                continue
            if not self._cmd_ok:
                log.warning("redis: reachable again")
                self._cmd_ok = True

    def _on_outage(self) -> None:
        # The pub/sub connection dropped: Redis probably went away. Fail publishes
        # now rather than at the next health ping, and drop pooled connections so
        # that none of them is a stale socket when Redis is back.
        if self._cmd_ok:
            self._cmd_ok = False
            task = asyncio.create_task(self._reset_pool())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _reset_pool(self) -> None:
        self._publisher.reset()
        if self._cmd is not None and not self._cluster:
            with contextlib.suppress(Exception):
                await self._cmd.connection_pool.disconnect()

    def _on_lost(self, channels: set[bytes]) -> None:
        self._recovery.hold(channels, int(time.time() * 1000))

    def _on_restored(self) -> None:
        # Every subscription is back: fill the gaps of the history topics it left.
        if self._recovery.held and (self._replay_task is None or self._replay_task.done()):
            task = asyncio.create_task(self._replay(), name="herald-redis-replay")
            self._replay_task = task
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _replay(self) -> None:
        """Fill every held topic's gap, a few topics at a time; retry on failures."""
        backoff = Backoff()
        held = self._recovery.held
        while held and not self._closed and self._listener.restored():
            batch = list(itertools.islice(held, REPLAY_CONCURRENCY))
            results = await asyncio.gather(
                *(self._replay_topic(t) for t in batch), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            for exc in failed:
                if not isinstance(exc, _REPLAY_ERRORS):
                    raise exc
            if failed:
                log.warning("redis: replay after an outage: %s (retrying)", failed[0])
                await backoff.sleep()
            else:
                backoff.reset()

    async def _replay_topic(self, topic: str) -> None:
        recovery = self._recovery
        rule = self._history_rule(topic)
        if rule is None:  # no history (any more): nothing to replay from
            out, gap = recovery.release(topic), None
        else:
            out, gap = await recovery.recover(topic, self._reader(topic, rule))
        if out and self._deliver is not None:
            self.counters["replayed"] += len(out)
            self._deliver(out)
        if gap is not None:
            self.counters["gaps"] += 1
            log.warning("redis: %r lost %s messages in an outage", topic, gap or "some")
            if self._on_gap is not None:
                self._on_gap(topic, gap)

    def _reader(self, topic: str, rule: HistoryRule) -> ReadHistory:
        return lambda since: self.history(topic, rule, since, REPLAY_LIMIT)

    def _on_reconnect(self) -> None:
        # Redis may have restarted empty: announce our prefixes again, and re-read
        # everyone's (once our control subscription is back, so no notice is lost).
        self._reannounce = True
        self._wake_registry.set()

    def stats(self) -> dict[str, int]:
        out = dict(self.counters)
        out["reconnects"] = self._listener.reconnects
        out["resubscribes"] = self._listener.resubscribes
        return out

    # ---- publish ---------------------------------------------------------------------------

    async def publish(self, items: list[PublishItem]) -> list[PublishOutcome]:
        if not items:
            return []
        self._require()
        if not self._listener.restored():
            # Accepting now would lose the message for this pod's own subscribers.
            raise BackplaneUnavailable("the Redis backplane is restoring its subscriptions")
        return await self._publisher.publish(items)

    async def forget(self, topic: str, msg_id: str) -> None:
        if self._cmd is None:
            return
        try:
            await self._cmd.delete(keys.idempotency_key(topic, msg_id))
        except REDIS_ERRORS as exc:  # the key expires on its own anyway
            log.warning("redis: could not release idempotency key: %s", exc)

    # ---- interest ---------------------------------------------------------------------------

    def watch(self, pattern: str) -> None:
        self._interest(pattern, True)

    def unwatch(self, pattern: str) -> None:
        self._interest(pattern, False)

    def _interest(self, pattern: str, added: bool) -> None:
        channel = keys.interest_channel(pattern)
        if added:
            self._listener.add(channel)
        else:
            self._listener.remove(channel)
        if is_wildcard(pattern):
            prefix = keys.literal_prefix(pattern)
            registry = self._registry
            if registry.add_local(prefix) if added else registry.remove_local(prefix):
                self._announce("+" if added else "-", prefix)
        self._copies.clear()

    def _announce(self, sign: str, prefix: str) -> None:
        self._notices.append((sign, prefix))
        if sign == "+" and prefix not in self._announcing:
            self._announcing[prefix] = asyncio.get_running_loop().create_future()
        self._wake_registry.set()

    async def live(self, pattern: str, wait_s: float = SUBSCRIBE_WAIT_S) -> bool:
        """Wait until local subscribers of a watched `pattern` really get messages.

        `watch` is synchronous, so the hub can answer `subscribed` before Redis
        confirmed this pod's SUBSCRIBE (and, for a wildcard, before the other pods
        heard of the prefix). A caller that must not miss a message published right
        after its reply awaits this first. False when not confirmed in `wait_s`.
        """
        if not await self._listener.subscribed(keys.interest_channel(pattern), wait_s):
            return False
        if is_wildcard(pattern):
            pending = self._announcing.get(keys.literal_prefix(pattern))
            if pending is not None:
                try:
                    async with asyncio.timeout(wait_s):
                        await asyncio.shield(pending)
                except TimeoutError:
                    return False
        return True

    async def _registry_loop(self) -> None:
        """Announce prefix changes at once; heartbeat and refresh the cache."""
        next_beat = 0.0
        loop = asyncio.get_running_loop()
        while not self._closed:
            timeout = max(0.0, next_beat - loop.time())
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a
            # cancellation that arrives as the event is set, and close() hung.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake_registry.wait()
            self._wake_registry.clear()
            reannounce, self._reannounce = self._reannounce, False
            try:
                if reannounce:
                    await self._listener.subscribed(keys.CONTROL_CHANNEL, SUBSCRIBE_WAIT_S)
                    self._notices.extend(("+", p) for p in self._registry.own)
                if self._notices:
                    await self._send_notices()
                if reannounce or loop.time() >= next_beat:
                    await self._heartbeat(keep=reannounce)
                    next_beat = loop.time() + HEARTBEAT_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("redis: prefix registry: %s", exc)
                self._reannounce |= reannounce
                next_beat = loop.time() + 0.5

    async def _send_notices(self) -> None:
        notices, self._notices = self._notices, []
        expiry = int((time.time() + MEMBER_TTL_S) * 1000)
        pipe = self._cmd.pipeline(transaction=False)
        for sign, prefix in notices:
            member = self._registry.member(prefix)
            if sign == "+":
                pipe.zadd(keys.PREFIXES_KEY, {member: expiry})
            else:
                pipe.zrem(keys.PREFIXES_KEY, member)
            pipe.execute_command(self._pub, keys.CONTROL_CHANNEL, f"{sign}{member}")
        try:
            await pipe.execute()
        except BaseException:
            self._notices[:0] = notices
            raise
        for sign, prefix in notices:
            fut = self._announcing.pop(prefix, None) if sign == "+" else None
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _heartbeat(self, *, keep: bool = False) -> None:
        """Renew our prefixes, drop expired ones, re-read everyone's.

        With `keep` (after a reconnect) known prefixes are kept: a Redis that came
        back empty lists only the pods that re-announced already, and forgetting the
        others would stop our publishes to their wildcard subscribers.
        """
        now_ms = int(time.time() * 1000)
        expiry = now_ms + int(MEMBER_TTL_S * 1000)
        pipe = self._cmd.pipeline(transaction=False)
        own = self._registry.own_members()
        if own:
            pipe.zadd(keys.PREFIXES_KEY, dict.fromkeys(own, expiry))
        pipe.zremrangebyscore(keys.PREFIXES_KEY, "-inf", now_ms)
        pipe.zrangebyscore(keys.PREFIXES_KEY, now_ms, "+inf")
        self._refreshing = []
        try:
            replies = await pipe.execute()
            self._registry.replace(replies[-1], keep=keep)
            for notice in self._refreshing:  # arrived while the read was in flight
                self._registry.on_notice(notice)
        finally:
            self._refreshing = None

    # ---- receive --------------------------------------------------------------------------------

    def _on_pubsub(self, batch: list[tuple[bytes, bytes]]) -> None:
        msgs: list[Message] = []
        check = bool(self._registry.own)  # copies are possible only with prefix channels
        for channel, payload in batch:
            if channel == keys.CONTROL_CHANNEL:
                self._on_notice(payload)
                continue
            for envelope in payload.split(b"\n") if b"\n" in payload else (payload,):
                try:
                    msg = Message.from_envelope(envelope)
                except Exception:
                    log.warning("redis: undecodable payload on %r", channel)
                    continue
                if check and self._is_copy(msg):
                    self.counters["duplicates_dropped"] += 1
                    continue
                msgs.append(msg)
        if msgs:
            self.counters["messages_in"] += len(msgs)
            msgs = self._recovery.on_live(msgs)
            if msgs and self._deliver is not None:
                self._deliver(msgs)

    def _on_notice(self, payload: bytes) -> None:
        self._registry.on_notice(payload)
        if self._refreshing is not None:
            self._refreshing.append(payload)

    def _is_copy(self, msg: Message) -> bool:
        topic = msg.topic
        copies = self._copies.get(topic)
        if copies is None:
            own = self._registry.own
            copies = int(self._listener.wants(keys.topic_channel(topic))) + sum(
                1 for p in keys.topic_prefixes(topic) if p in own
            )
            if len(self._copies) >= 50_000:
                self._copies.clear()
            self._copies[topic] = copies
        if copies < 2:
            return False
        seen = self._seen
        now = time.monotonic()
        while seen:
            first = next(iter(seen))
            if seen[first] > now and len(seen) < DEDUP_MAX:
                break
            del seen[first]
        key = (topic, msg.id, msg.offset)
        if key in seen:
            return True
        seen[key] = now + DEDUP_WINDOW_S
        return False

    # ---- history --------------------------------------------------------------------------------

    async def history(
        self, topic: str, rule: HistoryRule | None, since: int | None, limit: int
    ) -> HistoryPage:
        if rule is None:
            # Like the memory engine: a topic without a rule has no epoch and no log.
            return HistoryPage("", [], since is None or since == 0, 0)
        cmd = self._require()
        channel = keys.topic_channel(topic)
        # Node.resume registered the live subscription first; it is live only once
        # Redis confirmed it, so read history after that (no gap between the two).
        if self._listener.wants(channel) and not await self._listener.subscribed(
            channel, SUBSCRIBE_WAIT_S
        ):
            raise BackplaneUnavailable("the live subscription is not confirmed by Redis")
        argv = [
            -1 if since is None else since,
            limit,
            int(rule.ttl * 1000) if rule.ttl else 0,
            int(time.time() * 1000),
            secrets.token_hex(4),
            int(IDLE_EXPIRY_S * 1000),
        ]
        key_names = (keys.meta_key(topic), keys.history_key(topic))
        try:
            reply = await scripts.RUNNER.run(cmd, scripts.HISTORY, key_names, argv)
        except REDIS_ERRORS as exc:
            raise unavailable(exc) from None
        epoch = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        latest, first = int(reply[1]), int(reply[2])
        msgs = [Message.from_envelope(env) for env in reply[3:]]
        if self._listener.wants(channel):
            self._recovery.position(topic, epoch, latest)
        if since is None:
            return HistoryPage(epoch, msgs, True, latest)
        complete = first <= since + 1 and since <= latest
        if len(msgs) < latest - since:
            complete = False  # the caller's limit cut the replay short
        return HistoryPage(epoch, msgs, complete, latest)

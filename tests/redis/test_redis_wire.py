"""The publisher's raw command connection (fanout/redis/wire.py) against real servers.

Publishes travel on it rather than through redis-py, so what the driver did for
them must still hold: AUTH and SELECT from the URL, errors in their slots, and a
lost or silent connection failing what is in flight (never resent) and the next
request connecting again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fanout.backplane import PublishItem
from fanout.message import Message
from fanout.redis.backplane import RedisBackplane
from fanout.redis.wire import CommandWire, encode_command
from procs import RedisServer, running, until
from shared.config import HistoryRule
from shared.errors import BackplaneUnavailable

pytestmark = pytest.mark.integration


async def ask(wire: CommandWire, *commands: tuple[Any, ...]) -> list[Any] | Exception:
    await wire.connect()
    fut: asyncio.Future[list[Any] | Exception] = asyncio.get_running_loop().create_future()
    wire.request(b"".join(encode_command(*c) for c in commands), len(commands), fut.set_result)
    return await fut


async def test_password_and_db_of_the_url_are_used_by_publishes() -> None:
    redis = RedisServer(args=("--requirepass", "s3cret"))
    with running(redis):
        url = f"redis://:s3cret@127.0.0.1:{redis.port}/3"
        got: list[Message] = []
        pub, sub = RedisBackplane(url), RedisBackplane(url)
        await pub.start(lambda msgs: None)
        await sub.start(got.extend)
        try:
            sub.watch("t.a")
            assert await sub.live("t.a")
            rule = HistoryRule(pattern="t.>", size=10)
            item = PublishItem(Message.build("t.a", "m1", 1, {"x": 1}, None), rule, idempotent=True)
            (first,) = await pub.publish([item])
            (again,) = await pub.publish([item])
            assert (first.offset, first.duplicate) == (1, False)
            assert (again.offset, again.duplicate) == (1, True)
            await until(lambda: got, "the message reached the other pod")
            assert [(m.id, m.offset) for m in got] == [("m1", 1)]
            keys = redis.cli("-a", "s3cret", "--no-auth-warning", "-n", "3", "KEYS", "*")
            assert "herald:t:{t.a}:h" in keys.split()
            page = await pub.history("t.a", rule, 0, 10)
            assert [m.offset for m in page.messages] == [1]
        finally:
            await pub.close()
            await sub.close()


async def test_a_wrong_password_refuses_publishes() -> None:
    redis = RedisServer(args=("--requirepass", "s3cret"))
    with running(redis):
        wire = CommandWire("127.0.0.1", redis.port, handshake=[encode_command("AUTH", "nope")])
        with pytest.raises(Exception, match=r"WRONGPASS|invalid"):
            await wire.connect()
        assert not wire.connected


async def test_error_replies_come_back_in_their_slots(shared_redis: RedisServer) -> None:
    wire = CommandWire("127.0.0.1", shared_redis.port)
    try:
        replies = await ask(
            wire,
            ("SET", "wire:k", "v"),
            ("EVALSHA", "0" * 40, 0),
            ("INCR", "wire:k"),
            ("GET", "wire:k"),
        )
        assert not isinstance(replies, Exception)
        ok, noscript, wrongtype, value = replies
        assert ok == b"OK" and value == b"v"
        assert isinstance(noscript, NoScriptError)
        assert isinstance(wrongtype, ResponseError) and not isinstance(wrongtype, NoScriptError)
    finally:
        wire.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A TCP server that reads everything and answers nothing; its open connections."""
    conns: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, conns
    finally:
        for w in conns:
            w.close()
        server.close()


async def test_a_silent_redis_fails_the_requests_in_flight(
    silent_server: tuple[int, list[asyncio.StreamWriter]],
) -> None:
    port, conns = silent_server
    wire = CommandWire("127.0.0.1", port, timeout_s=0.2)
    result = await ask(wire, ("PING",), ("PING",))
    assert isinstance(result, RedisTimeoutError), result
    assert not wire.connected
    # A lost connection fails what is in flight; the next request connects again.
    pending = asyncio.ensure_future(ask(wire, ("PING",)))
    await until(lambda: len(conns) == 2, "the second connection")
    conns[1].close()
    result = await pending
    assert isinstance(result, RedisConnectionError), result
    assert len(conns) == 2


async def test_publish_on_a_silent_redis_is_a_503(
    silent_server: tuple[int, list[asyncio.StreamWriter]], shared_redis: RedisServer
) -> None:
    # The backplane connects to a real Redis, then its publish connection is pointed
    # at a server that never answers: the publish fails (503) instead of hanging.
    bp = RedisBackplane(shared_redis.url)
    await bp.start(lambda msgs: None)
    try:
        port, _ = silent_server
        publisher = bp._publisher
        publisher.configure(
            bp.command_client, cluster=False, wire=CommandWire("127.0.0.1", port, timeout_s=0.2)
        )
        item = PublishItem(Message.build("t.b", "m1", 1, {}, None))
        with pytest.raises(BackplaneUnavailable):
            await bp.publish([item])
    finally:
        await bp.close()


async def test_scripts_flushed_under_a_connected_publisher_are_reloaded(
    shared_redis: RedisServer,
) -> None:
    shared_redis.cli("FLUSHALL")
    bp = RedisBackplane(shared_redis.url)
    await bp.start(lambda msgs: None)
    try:
        rule = HistoryRule(pattern="t.>", size=10)
        first = PublishItem(Message.build("t.c", "m1", 1, {}, None), rule)
        assert [o.offset for o in await bp.publish([first])] == [1]
        shared_redis.cli("SCRIPT", "FLUSH")
        items = [PublishItem(Message.build("t.c", f"m{i}", 1, {}, None), rule) for i in (2, 3)]
        plain = PublishItem(Message.build("t.d", "p1", 1, {}, None))
        outcomes = await asyncio.gather(bp.publish(items), bp.publish([plain]))
        assert [[o.offset for o in out] for out in outcomes] == [[2, 3], [None]]
        page = await bp.history("t.c", rule, 0, 10)
        assert [m.id for m in page.messages] == ["m1", "m2", "m3"]
    finally:
        await bp.close()


async def test_a_cancelled_connect_leaves_no_unauthenticated_connection(
    silent_server: tuple[int, list[asyncio.StreamWriter]],
) -> None:
    port, conns = silent_server
    hello = [encode_command("AUTH", "s3cret")]
    wire = CommandWire("127.0.0.1", port, handshake=hello, timeout_s=60)
    task = asyncio.ensure_future(wire.connect())
    await until(lambda: conns, "the connection")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not wire.connected  # a request now would connect (and authenticate) again

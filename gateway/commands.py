"""WebSocket commands (docs/protocol.md): each parses, authorizes, calls the node, replies.

A handler runs synchronously inside `data_received`; anything that must await
(publish, resume, queues) is spawned as a task whose errors become `error` frames.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fanout.hub import Shape
from fanout.message import Message
from gateway.edge import Handler
from gateway.wsproto import HeraldWebSocket
from shared.errors import Forbidden, HeraldError, InvalidRequest, ReceiptInvalid
from shared.topics import is_wildcard

MAX_PREFETCH = 1000


def _reply(conn: HeraldWebSocket, cmd: dict[str, Any], op: str, **fields: Any) -> None:
    out: dict[str, Any] = {"op": op}
    if "id" in cmd:
        out["id"] = cmd["id"]
    out.update(fields)
    conn.send(out)


def _send_owed(conn: HeraldWebSocket, key: str, msgs: list[Message]) -> None:
    # The hub builds every `msgs` frame, so a replay is chunked like a broadcast.
    if msgs and conn.is_open:
        conn.transport.writelines(conn.node.hub.msgs_frames(key, msgs))


def auth(conn: HeraldWebSocket, cmd: dict[str, Any]) -> None:
    principal = conn.authenticate(cmd.get("token"))
    fields: dict[str, Any] = {"client": principal.sub}
    if principal.exp is not None:
        fields["exp"] = principal.exp
    _reply(conn, cmd, "authenticated", **fields)


def ping(conn: HeraldWebSocket, cmd: dict[str, Any]) -> None:
    _reply(conn, cmd, "pong")


def subscribe(conn: HeraldWebSocket, cmd: dict[str, Any]) -> None:
    node = conn.node
    shape = node.shape(cmd, conn.require_principal())
    since = cmd.get("since")
    epoch = cmd.get("epoch")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
        raise InvalidRequest("'since' must be a non-negative integer offset")
    if epoch is not None and not isinstance(epoch, str):
        raise InvalidRequest("'epoch' must be a string")
    limit = node.settings.max_subscriptions_per_connection
    if len(node.hub.subscriptions_of(conn)) >= limit:
        raise InvalidRequest(f"at most {limit} subscriptions per connection")
    wants_history = since is not None or (
        shape.mode == "all"
        and not is_wildcard(shape.pattern)
        and node.settings.history_rule(shape.pattern) is not None
    )
    if wants_history:
        conn.spawn(cmd.get("id"), _resume(conn, cmd, shape, since, epoch))
    elif node.backplane.live_is_immediate:
        group = node.hub.subscribe(conn, shape)
        _reply(conn, cmd, "subscribed", sub=group.key, topic=shape.pattern)
    else:
        conn.spawn(cmd.get("id"), _subscribe_confirmed(conn, cmd, shape))


async def _subscribe_confirmed(conn: HeraldWebSocket, cmd: dict[str, Any], shape: Shape) -> None:
    """Reply only once the backplane delivers for the pattern, so a message published
    right after `subscribed` is not missed; what arrives meanwhile follows the reply."""
    node = conn.node
    group = node.hub.subscribe(conn, shape, catch_up=True)
    try:
        await node.backplane.live(shape.pattern)
    except BaseException:
        node.hub.unsubscribe(conn, group.key)
        raise
    owed = node.hub.finish_catch_up(conn, group.key, [])
    _reply(conn, cmd, "subscribed", sub=group.key, topic=shape.pattern)
    _send_owed(conn, group.key, owed)


async def _resume(
    conn: HeraldWebSocket, cmd: dict[str, Any], shape: Shape, since: int | None, epoch: str | None
) -> None:
    # Without `since` (a history topic): go live and tell the client its position
    # (epoch and offset) so that it can resume later.
    node = conn.node
    res = await node.resume(conn, shape, since, epoch, page=_replay_page(conn, None))
    fields: dict[str, Any] = {"sub": shape.sub_key, "topic": shape.pattern}
    if since is not None:
        fields["recovered"] = res.recovered
    _reply(conn, cmd, "subscribed", **fields, epoch=res.epoch, offset=res.offset)
    msgs, more = res.messages, res.more
    _send_owed(conn, shape.sub_key, msgs)
    while more:
        # The rest of a long replay, a page at a time once the socket has drained,
        # so a replay never sits whole in the write buffer (send_buffer_bytes).
        await conn.drained()
        after = msgs[-1].offset or 0
        msgs, more, skipped = await node.resume_more(conn, shape, after, _replay_page(conn, msgs))
        if skipped:
            conn.send({"op": "lagged", "sub": shape.sub_key, "dropped": skipped})
        _send_owed(conn, shape.sub_key, msgs)


def _replay_page(conn: HeraldWebSocket, last: list[Message] | None) -> int:
    """Messages per replay page: about one send buffer's worth (16-1,000)."""
    settings = conn.node.settings
    size = settings.max_message_bytes
    if last:
        size = max(1, sum(len(m.envelope) for m in last) // len(last))
    return max(16, min(1000, settings.send_buffer_bytes // size))


def unsubscribe(conn: HeraldWebSocket, cmd: dict[str, Any]) -> None:
    key = cmd.get("sub")
    if not isinstance(key, str) or not conn.node.hub.unsubscribe(conn, key):
        raise InvalidRequest("no such subscription on this connection")
    _reply(conn, cmd, "unsubscribed", sub=key)


def publish(conn: HeraldWebSocket, cmd: dict[str, Any]) -> None:
    principal = conn.require_principal()
    # The command's `id` correlates the reply; the idempotency key is `msg_id`.
    entry: dict[str, Any] = {k: cmd[k] for k in ("topic", "data", "attributes") if k in cmd}
    if "msg_id" in cmd:
        entry["id"] = cmd["msg_id"]
    item = conn.node.prepare(entry, principal)  # validate now: errors reply at once

    async def run() -> None:
        (result,) = await conn.node.publish_prepared([item])
        fields: dict[str, Any] = {"msg_id": result.id}
        if result.offset is not None:
            fields["offset"] = result.offset
        _reply(conn, cmd, "published", **fields)

    conn.spawn(cmd.get("id"), run(), exclusive=False)


def _queue_service(conn: HeraldWebSocket) -> Any:
    queues = conn.node.queues
    if queues is None:
        raise InvalidRequest("queues are not enabled on this server")
    principal = conn.require_principal()
    if not principal.admin:
        raise Forbidden("queue consumers need an API key or an admin token")
    return queues


def consume(conn: HeraldWebSocket, cmd: dict[str, Any]) -> None:
    from fanout.queues.consumer import QueueConsumer

    service = _queue_service(conn)
    queue = cmd.get("queue")
    prefetch = cmd.get("prefetch", 1)
    vt = cmd.get("visibility_timeout")
    if not isinstance(queue, str):
        raise InvalidRequest("'queue' is required")
    if (
        isinstance(prefetch, bool)
        or not isinstance(prefetch, int)
        or not 1 <= prefetch <= MAX_PREFETCH
    ):
        raise InvalidRequest(f"'prefetch' must be 1-{MAX_PREFETCH}")
    consumers = conn.consumers()
    if queue in consumers:
        raise InvalidRequest(f"already consuming {queue!r}")

    def send_job(job: dict[str, Any]) -> None:
        conn.send(job)

    # Registered before the first await, so a second `consume` of the queue sent
    # right behind this one is refused instead of starting an orphan (issue 9).
    def on_end(exc: HeraldError) -> None:  # the queue was deleted
        if consumers.get(queue) is consumer:
            del consumers[queue]
        conn.send_error(cmd.get("id"), exc)

    consumer = QueueConsumer(service, queue, prefetch, vt, send_job, on_end)
    consumers[queue] = consumer

    async def run() -> None:
        try:
            await consumer.start()  # queue_not_found before we say "consuming"
        except BaseException:
            if consumers.get(queue) is consumer:
                del consumers[queue]
            raise
        # Synchronous after start(): the reply goes out before the first job.
        _reply(conn, cmd, "consuming", queue=queue)

    conn.spawn(cmd.get("id"), run())


def _consumer_for(conn: HeraldWebSocket, cmd: dict[str, Any], receipt: str) -> Any:
    consumers = conn.consumers()
    queue = cmd.get("queue")
    if isinstance(queue, str) and queue in consumers:
        return consumers[queue]
    for consumer in consumers.values():
        if consumer.owns(receipt):
            return consumer
    raise ReceiptInvalid("no consumer on this connection holds that receipt")


def ack(conn: HeraldWebSocket, cmd: dict[str, Any]) -> None:
    receipts = cmd.get("receipts")
    if receipts is None and "receipt" in cmd:
        receipts = [cmd["receipt"]]
    if (
        not isinstance(receipts, list)
        or not receipts
        or not all(isinstance(r, str) for r in receipts)
    ):
        raise InvalidRequest("'receipt' or 'receipts' is required")
    consumer = _consumer_for(conn, cmd, receipts[0])

    async def run() -> None:
        results = await consumer.ack(receipts)
        _reply(conn, cmd, "acked", results=results)

    conn.spawn(cmd.get("id"), run(), exclusive=False)


def _settle(
    conn: HeraldWebSocket,
    cmd: dict[str, Any],
    receipt: str,
    call: Callable[[Any], Awaitable[object]],
    reply: str,
) -> None:
    """Run `call` on the consumer holding `receipt`, then answer `reply`."""
    consumer = _consumer_for(conn, cmd, receipt)

    async def run() -> None:
        await call(consumer)
        _reply(conn, cmd, reply)

    conn.spawn(cmd.get("id"), run(), exclusive=False)


def nack(conn: HeraldWebSocket, cmd: dict[str, Any]) -> None:
    receipt = cmd.get("receipt")
    delay = cmd.get("delay", 0)
    if not isinstance(receipt, str):
        raise InvalidRequest("'receipt' is required")
    _settle(conn, cmd, receipt, lambda consumer: consumer.nack(receipt, delay), "nacked")


def extend(conn: HeraldWebSocket, cmd: dict[str, Any]) -> None:
    receipt = cmd.get("receipt")
    timeout = cmd.get("visibility_timeout")
    if not isinstance(receipt, str) or not isinstance(timeout, int | float):
        raise InvalidRequest("'receipt' and 'visibility_timeout' are required")
    _settle(conn, cmd, receipt, lambda consumer: consumer.extend(receipt, timeout), "extended")


HANDLERS: dict[str, Handler] = {
    "auth": auth,
    "ping": ping,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "publish": publish,
    "consume": consume,
    "ack": ack,
    "nack": nack,
    "extend": extend,
}

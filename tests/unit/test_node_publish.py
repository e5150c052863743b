"""Node.publish on the memory engine: what its per-topic cache must not change."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fanout.backplane import PublishOutcome
from fanout.memory import MemoryBackplane
from fanout.node import Node
from shared.auth import ANONYMOUS, Principal
from shared.config import HistoryRule, Settings
from shared.errors import Forbidden, InvalidRequest, InvalidTopic


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node(Settings(), MemoryBackplane())
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


async def offset(node: Node, topic: str, principal: Principal = ANONYMOUS) -> int | None:
    (out,) = await node.publish([{"topic": topic, "data": 1}], principal)
    assert isinstance(out, PublishOutcome), out
    return out.offset


async def test_history_rules_replaced_at_runtime_apply_to_topics_seen_before(node: Node) -> None:
    assert await offset(node, "t.a") is None
    # gateway/apply.py replaces the list while the node runs (declared rules).
    node.settings.history = [HistoryRule(pattern="t.>", size=10)]
    assert [await offset(node, "t.a") for _ in range(2)] == [1, 2]
    node.settings.history = []
    assert await offset(node, "t.a") is None


async def test_a_topic_seen_before_is_still_checked_against_each_principal(node: Node) -> None:
    assert await offset(node, "t.a") is None
    limited = Principal(sub="x", publish=("other.>",))
    (out,) = await node.publish([{"topic": "t.a", "data": 1}], limited)
    assert isinstance(out, Forbidden)


async def test_bad_entries_fail_alone_and_every_time(node: Node) -> None:
    for _ in range(2):
        (bad,) = await node.publish([{"topic": "a..b", "data": 1}], ANONYMOUS)
        assert isinstance(bad, InvalidTopic)
        (bad,) = await node.publish([{"topic": "t.a", "attributes": {"k": []}}], ANONYMOUS)
        assert isinstance(bad, InvalidRequest)
        (bad,) = await node.publish([{"topic": ["t.a"], "data": 1}], ANONYMOUS)
        assert isinstance(bad, InvalidTopic)
    mixed = await node.publish([{"topic": "t.a"}, {"topic": "*"}, {"topic": "t.b"}], ANONYMOUS)
    assert [type(r) for r in mixed] == [PublishOutcome, InvalidTopic, PublishOutcome]
    assert node.published_total == 2


async def test_repeats_of_an_id_are_duplicates_and_not_counted(node: Node) -> None:
    entry = {"topic": "t.a", "id": "m1", "data": 1}
    (first,) = await node.publish([entry], ANONYMOUS)
    (again,) = await node.publish([entry], ANONYMOUS)
    assert isinstance(first, PublishOutcome) and isinstance(again, PublishOutcome)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert node.published_total == 1

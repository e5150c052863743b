"""The Backplane interface: how messages travel between gateway processes.

One implementation per engine, chosen at start-up (Centrifuge's broker split):
`MemoryBackplane` for one process, `RedisBackplane` for many. The hub knows
nothing of either; the node wires `deliver` to `Hub.dispatch`.

A backplane owns what must be shared across pods: per-topic offsets and history,
idempotency keys, and the routing of each message to the pods that want it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field

from fanout.message import Message
from shared.config import HistoryRule

IDEMPOTENCY_WINDOW_S = 300.0  # SPEC §2: the same id on the same topic within 5 minutes


@dataclass(slots=True)
class PublishItem:
    """One message to publish: its envelope without an offset, and its options."""

    message: Message
    history: HistoryRule | None = None
    # Set when the client supplied the id: a repeat within the window is a duplicate.
    idempotent: bool = False


@dataclass(slots=True)
class PublishOutcome:
    """The accepted message (with its offset) or, for a duplicate, the first one."""

    id: str
    offset: int | None
    duplicate: bool = False


@dataclass(slots=True)
class HistoryPage:
    """Messages after an offset, and whether history still covered that offset."""

    epoch: str
    messages: list[Message] = field(default_factory=list)
    # False when `since` is older than what history keeps, or newer than the topic.
    complete: bool = True
    latest: int = 0


Deliver = Callable[[list[Message]], None]
# The history rule of a topic (None: it keeps no history).
RuleLookup = Callable[[str], HistoryRule | None]
# `topic` lost `dropped` messages on their way to this process (0: unknown how many).
OnGap = Callable[[str, int], None]


class Backplane(abc.ABC):
    """Routes published messages to every interested gateway process."""

    name: str = "backplane"

    @abc.abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Connect; from now on call `deliver` with messages for watched patterns."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and stop delivering."""

    @abc.abstractmethod
    async def publish(self, items: list[PublishItem]) -> list[PublishOutcome]:
        """Assign offsets, keep history, drop duplicates, and route to subscribers.

        Raises `BackplaneUnavailable` when the messages could not be accepted.
        """

    @abc.abstractmethod
    async def forget(self, topic: str, msg_id: str) -> None:
        """Release an idempotency key so a retry of a failed publish is accepted."""

    @abc.abstractmethod
    def watch(self, pattern: str) -> None:
        """This process has local subscribers for `pattern` (first one)."""

    @abc.abstractmethod
    def unwatch(self, pattern: str) -> None:
        """This process's last local subscriber for `pattern` left."""

    @abc.abstractmethod
    async def history(
        self, topic: str, rule: HistoryRule | None, since: int | None, limit: int
    ) -> HistoryPage:
        """Messages of `topic` after offset `since` (all kept ones when None)."""

    @abc.abstractmethod
    def ready(self) -> bool:
        """True while messages can be published and delivered."""

    def attach(self, history_rule: RuleLookup, on_gap: OnGap) -> None:
        """Hooks from the node, before `start`: the history rule of a topic, and
        where to report messages lost upstream. A backplane that cannot lose any
        (the memory engine) ignores them."""
        return None

    # True when `watch` takes effect at once (no round trip to confirm).
    live_is_immediate: bool = True

    async def live(self, pattern: str) -> bool:
        """Wait until subscribers of a watched `pattern` really receive messages.

        `watch` is synchronous; a backplane that confirms subscriptions remotely
        overrides this so `subscribed` is not answered before delivery works.
        """
        return True

    def stats(self) -> dict[str, int]:
        """Counters for /metrics (messages in/out, reconnects, resubscribes)."""
        return {}

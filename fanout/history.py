"""In-process topic history: bounded per-topic logs with offsets and an epoch.

Each topic's epoch is drawn when its log is created, so a restart of the embedded
engine (which keeps history in memory) changes the epoch and resuming clients are
told `recovered: false` instead of getting a silent gap (docs/protocol.md, History and resume).
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field

from fanout.backplane import HistoryPage
from fanout.message import Message
from shared.config import HistoryRule

_MAX_SIZE_WITHOUT_LIMIT = 10_000  # a ttl-only rule still needs a memory bound


@dataclass(slots=True)
class TopicLog:
    epoch: str
    next_offset: int = 1
    entries: deque[Message] = field(default_factory=deque)
    # Lowest offset still covered: older ones were trimmed (size/ttl).
    first_offset: int = 1


class MemoryHistory:
    """Offsets and bounded history for topics with a history rule."""

    def __init__(self) -> None:
        self._logs: dict[str, TopicLog] = {}

    def _log(self, topic: str) -> TopicLog:
        log = self._logs.get(topic)
        if log is None:
            log = self._logs[topic] = TopicLog(epoch=secrets.token_hex(4))
        return log

    def append(self, msg: Message, rule: HistoryRule, now_ms: int) -> Message:
        """Give `msg` the topic's next offset and keep it; returns the stored message."""
        log = self._log(msg.topic)
        stored = msg.with_offset(log.next_offset)
        log.next_offset += 1
        log.entries.append(stored)
        self._trim(log, rule, now_ms)
        return stored

    def _trim(self, log: TopicLog, rule: HistoryRule, now_ms: int) -> None:
        size = rule.size or _MAX_SIZE_WITHOUT_LIMIT
        entries = log.entries
        while len(entries) > size:
            entries.popleft()
        if rule.ttl is not None:
            cutoff = now_ms - int(rule.ttl * 1000)
            while entries and entries[0].ts < cutoff:
                entries.popleft()
        log.first_offset = entries[0].offset or log.next_offset if entries else log.next_offset

    def read(
        self, topic: str, rule: HistoryRule | None, since: int | None, limit: int, now_ms: int
    ) -> HistoryPage:
        """Messages after `since`; `complete` is False when history lost some of them."""
        log = self._logs.get(topic)
        if log is None:
            log = self._log(topic) if rule is not None else TopicLog(epoch="")
        if rule is not None:
            self._trim(log, rule, now_ms)
        latest = log.next_offset - 1
        if since is None:
            msgs = list(log.entries)[-limit:] if limit else []
            return HistoryPage(log.epoch, msgs, True, latest)
        complete = log.first_offset <= since + 1 and since <= latest
        msgs = [m for m in log.entries if m.offset is not None and m.offset > since][:limit]
        if len(msgs) < latest - since:
            complete = False  # the caller's limit cut the replay short
        return HistoryPage(log.epoch, msgs, complete, latest)

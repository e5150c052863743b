"""Which wildcard prefixes are watched somewhere, so publishers know where to fan out.

A pod serving a wildcard pattern subscribes to the pattern's prefix channel
(`keys.literal_prefix`). Publishers send each message to its exact-topic channel
and to the channel of every prefix of the topic that at least one pod watches.
This module keeps that set:

- Locally, per pod: a refcount per prefix (several patterns share a prefix).
- In Redis: a zset `herald:prefixes` of `<pod>:<prefix>` scored by an expiry time;
  each pod re-adds its members every `HEARTBEAT_S`, so a dead pod's interest
  expires after `MEMBER_TTL_S` (publishing to a channel nobody hears costs one
  dictionary lookup in Redis, so a stale entry is cheap).
- Cached in every pod: the union of live members, refreshed with each heartbeat
  and updated at once by `+pod:prefix` / `-pod:prefix` notices on `herald:ctl`.

Sans-I/O: the backplane does the Redis calls; this class only keeps the sets.
"""

from __future__ import annotations

from collections.abc import Iterable

from fanout.redis.keys import prefix_channel, topic_prefixes

HEARTBEAT_S = 5.0
MEMBER_TTL_S = 15.0


class PrefixRegistry:
    """This pod's wildcard prefixes and its cache of every pod's."""

    def __init__(self, pod: str) -> None:
        self.pod = pod
        self.own: dict[str, int] = {}  # prefix -> local patterns using it
        self._remote: dict[str, set[str]] = {}  # prefix -> other pods watching it
        self._known: dict[str, bytes] = {}  # every watched prefix -> its channel

    # ---- this pod --------------------------------------------------------------

    def add_local(self, prefix: str) -> bool:
        """Count one more local pattern with this prefix; True for the first one."""
        n = self.own.get(prefix, 0)
        self.own[prefix] = n + 1
        if n == 0:
            self._known.setdefault(prefix, prefix_channel(prefix))
        return n == 0

    def remove_local(self, prefix: str) -> bool:
        """Count one local pattern less; True when it was the last one."""
        n = self.own.get(prefix, 0)
        if n <= 0:
            return False
        if n > 1:
            self.own[prefix] = n - 1
            return False
        del self.own[prefix]
        if prefix not in self._remote:
            self._known.pop(prefix, None)
        return True

    def member(self, prefix: str) -> str:
        return f"{self.pod}:{prefix}"

    def own_members(self) -> list[str]:
        return [self.member(p) for p in self.own]

    # ---- other pods --------------------------------------------------------------

    def on_notice(self, notice: bytes) -> None:
        """Apply a `+pod:prefix` / `-pod:prefix` notice from the control channel."""
        text = notice.decode(errors="replace")
        if len(text) < 2 or text[0] not in "+-":
            return
        pod, sep, prefix = text[1:].partition(":")
        if not sep or pod == self.pod:
            return
        if text[0] == "+":
            self._remote.setdefault(prefix, set()).add(pod)
            self._known.setdefault(prefix, prefix_channel(prefix))
        else:
            self._drop_remote(prefix, pod)

    def replace(self, members: Iterable[bytes | str], *, keep: bool = False) -> None:
        """Rebuild the cache of other pods' prefixes from the zset's live members.

        With `keep`, add to the cache instead (stale entries go at the next call).
        """
        remote: dict[str, set[str]] = (
            {p: set(pods) for p, pods in self._remote.items()} if keep else {}
        )
        for raw in members:
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            pod, sep, prefix = text.partition(":")
            if sep and pod != self.pod:
                remote.setdefault(prefix, set()).add(pod)
        self._remote = remote
        known = {p: prefix_channel(p) for p in remote}
        for p in self.own:
            known.setdefault(p, prefix_channel(p))
        self._known = known

    def _drop_remote(self, prefix: str, pod: str) -> None:
        pods = self._remote.get(prefix)
        if pods is None:
            return
        pods.discard(pod)
        if not pods:
            del self._remote[prefix]
            if prefix not in self.own:
                self._known.pop(prefix, None)

    # ---- publishing ----------------------------------------------------------------

    @property
    def prefixes(self) -> set[str]:
        return set(self._known)

    def channels_for(self, topic: str) -> list[bytes]:
        """The prefix channels a message of `topic` must also go to."""
        known = self._known
        if not known:
            return []
        return [ch for p in topic_prefixes(topic) if (ch := known.get(p)) is not None]

"""SubscriptionIndex: which subscription groups want a topic.

Exact patterns live in a dict; wildcard patterns in a trie over segments, so a
publish walks at most one path per `*` branch instead of scanning every
subscription. Results are cached per topic until the index changes, because a hot
topic is matched many times between two subscribes.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from shared.topics import is_wildcard

T = TypeVar("T", bound=Hashable)

_CACHE_LIMIT = 50_000


class _Node(Generic[T]):
    __slots__ = ("children", "here", "tail")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.here: dict[T, None] = {}  # patterns ending at this node
        self.tail: dict[T, None] = {}  # patterns ending with `>` at this node


class SubscriptionIndex(Generic[T]):
    """Maps patterns to items (subscription groups) and topics to matching items."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[T, None]] = {}
        self._root: _Node[T] = _Node()
        self._cache: dict[str, list[T]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, pattern: str, item: T) -> None:
        """Index `item` under a valid `pattern`."""
        self._cache.clear()
        if not is_wildcard(pattern):
            bucket = self._exact.setdefault(pattern, {})
        else:
            node = self._root
            segments = pattern.split(".")
            for seg in segments[:-1]:
                node = node.children.setdefault(seg, _Node())
            last = segments[-1]
            bucket = node.tail if last == ">" else node.children.setdefault(last, _Node()).here
        if item not in bucket:
            bucket[item] = None
            self._count += 1

    def remove(self, pattern: str, item: T) -> None:
        """Forget `item` under `pattern`; unknown pairs are ignored."""
        self._cache.clear()
        if not is_wildcard(pattern):
            bucket = self._exact.get(pattern)
            if bucket is not None and bucket.pop(item, 0) is None:
                self._count -= 1
                if not bucket:
                    del self._exact[pattern]
            return
        path: list[tuple[_Node[T], str]] = []
        node = self._root
        segments = pattern.split(".")
        for seg in segments[:-1]:
            child = node.children.get(seg)
            if child is None:
                return
            path.append((node, seg))
            node = child
        last = segments[-1]
        if last == ">":
            if node.tail.pop(item, 0) is None:
                self._count -= 1
        else:
            child = node.children.get(last)
            if child is None:
                return
            if child.here.pop(item, 0) is None:
                self._count -= 1
            path.append((node, last))
        # Prune empty branches so a churn of patterns does not grow the trie forever.
        for parent, seg in reversed(path):
            child = parent.children[seg]
            if child.children or child.here or child.tail:
                break
            del parent.children[seg]

    def match(self, topic: str) -> list[T]:
        """Every item whose pattern matches the concrete `topic` (no duplicates)."""
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        found: dict[T, None] = {}
        exact = self._exact.get(topic)
        if exact:
            found.update(exact)
        root = self._root
        # A bare `>` sits on the root's tail, so an index with no other wildcard
        # must still walk (issue 9: `subscribe {"topic": ">"}` received nothing).
        if root.children or root.tail:
            self._walk(root, topic.split("."), 0, found)
        result = list(found)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = result
        return result

    def _walk(self, node: _Node[T], segs: list[str], i: int, found: dict[T, None]) -> None:
        if node.tail and i < len(segs):
            found.update(node.tail)
        if i == len(segs):
            found.update(node.here)
            return
        child = node.children.get(segs[i])
        if child is not None:
            self._walk(child, segs, i + 1, found)
        star = node.children.get("*")
        if star is not None:
            self._walk(star, segs, i + 1, found)

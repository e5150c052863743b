"""Lua scripts on Redis: EVALSHA first, SCRIPT LOAD and run again on NOSCRIPT.

One runner for the backplane and the queue store. A NOSCRIPT reply means the
script did not run (a restarted Redis, a new primary after a failover), so running
it again is safe; any other error is returned or raised untouched, never retried
(a script that may have run must not run twice).

Calls are raw `EVALSHA` commands, which Redis, RedisCluster and both kinds of
pipeline accept alike (a cluster routes them by their keys).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua source and its SHA1."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())

    def add(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue one call on a pipeline."""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


class ScriptRunner:
    """Runs a fixed set of scripts, loading them where Redis lacks them."""

    def __init__(self, scripts: Iterable[Script]) -> None:
        self.scripts = tuple(scripts)

    async def load(self, client: Any) -> None:
        """SCRIPT LOAD every script (on every primary of a cluster)."""
        for script in self.scripts:
            await client.script_load(script.source)

    async def run(
        self, client: Any, script: Script, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        """One script call; raises what Redis raised (but NOSCRIPT)."""
        try:
            return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(client)
            return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def reload_missing(
        self,
        client: Any,
        results: list[Any],
        again: Callable[[list[int]], Awaitable[Sequence[Any]]],
    ) -> list[Any]:
        """Replace the NOSCRIPT results of a pipeline: load, then `again(indexes)`.

        `again` runs the calls at those indexes once more and returns their results
        in the same order (one round trip, not one per call).
        """
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            await self.load(client)
            for i, r in zip(missing, await again(missing), strict=True):
                results[i] = r
        return results

    async def pipeline(
        self, client: Any, calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """(script, keys, args) calls in one non-transactional pipeline.

        One result per call, in order; an error is returned in its slot, not raised.
        """

        async def send(indexes: Sequence[int]) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for i in indexes:
                script, keys, args = calls[i]
                script.add(pipe, keys, args)
            return list(await pipe.execute(raise_on_error=False))

        return await self.reload_missing(client, await send(range(len(calls))), send)

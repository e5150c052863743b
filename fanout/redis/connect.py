"""Which client a Herald Redis URL needs: `Redis` or `RedisCluster` (the queue store).

The URL rules are the backplane's (`fanout.redis_backplane._split_url`): a
`redis+cluster://` (or `rediss+cluster://`) scheme forces cluster mode, otherwise
`INFO cluster` on the given node decides. `?max_connections=N` caps the pool when
it is given (unlike the backplane, there is no default cap here: a queue store's
connections are per concurrent request, and RedisCluster's pool does not block).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from redis.asyncio import Redis

from fanout.redis_backplane import _split_url


def split(url: str) -> tuple[str, bool, dict[str, Any]]:
    """(URL redis-py accepts, cluster forced, extra client kwargs) from a Herald URL."""
    clean, forced, pool = _split_url(url)
    extra: dict[str, Any] = {}
    if "max_connections" in dict(parse_qsl(urlsplit(url).query)):
        extra["max_connections"] = pool
    return clean, forced, extra


async def detect_cluster(url: str, **kwargs: Any) -> bool:
    """Whether `url` names a Redis Cluster: forced by its scheme, else `INFO cluster`.

    The probe uses its own short-lived client (as the backplane does), so the
    caller's client pool is left untouched.
    """
    clean, forced, extra = split(url)
    if forced:
        return True
    probe = Redis.from_url(clean, **extra, **kwargs)
    try:
        info = await probe.info("cluster")
        return bool(int(info.get("cluster_enabled", 0)))
    finally:
        await probe.aclose()

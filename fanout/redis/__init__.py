"""Herald's one Redis layer: the backplane, and what the queue store shares with it.

    backplane.py  RedisBackplane: lifecycle, health, interest, receive, history
    keys.py       every key and channel name, and the interest → channel mapping
    scripts.py    the backplane's Lua scripts (publish, read history)
    publisher.py  publish planning, coalesced pipelines, packed payloads
    listener.py   the pub/sub connections: desired channels, reconnect, resubscribe
    registry.py   which wildcard prefixes some pod watches (so publishers fan out)
    connect.py    URL parsing, cluster detection, client options, reconnect backoff
    runner.py     EVALSHA with the NOSCRIPT fallback (backplane and queue store)
    errors.py     Redis failures → Herald errors (backplane and queue store)

The queue store (`fanout.queues.redis_store`) keeps its own keys and scripts but
connects, runs scripts and reports errors through this package.
docs/redis.md describes the design and its costs.
"""

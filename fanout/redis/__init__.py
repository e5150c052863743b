"""Parts of the Redis backplane (`fanout.redis_backplane.RedisBackplane`).

    keys.py      every key and channel name, and the interest → channel mapping
    scripts.py   the Lua scripts (publish, read history) and their loader
    publisher.py publish planning, coalesced pipelines, packed payloads
    listener.py  the pub/sub connections: desired channels, reconnect, resubscribe
    registry.py  which wildcard prefixes some pod watches (so publishers fan out)

docs/redis.md describes the design and its costs.
"""

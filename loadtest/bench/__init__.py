"""Issue 5: Herald against its peers, same machine, same scenarios, one run.

Every system is started here on loopback, pinned to core 0 (its Redis too); the load
generators (`loadtest/loadclient.py`, one process per 9,000 sockets) and the
publisher are pinned to core 1, this driver too. Server CPU is every thread's
`sum_exec_runtime` from /proc/<pid>/task/*/schedstat (Python, Node and Go alike).

Systems: Herald (memory, redis engines), the raw floor (`loadtest/floor_server.py`),
`websockets.broadcast()`, FastAPI's ConnectionManager recipe, encode/broadcaster on
Redis + FastAPI, python-socketio + AsyncRedisManager, Node socket.io +
@socket.io/redis-adapter, nats-server with websocket.

Scenarios:
  (a) capacity: N subscribers of one topic, M messages, server CPU µs per delivered message
  (b) latency: N subscribers over T topics at R msg/s total, p50/p99/max publish->receive
  (c) idle memory: RSS per subscribed idle connection
  (d) batching: Herald batch_ms=100 vs 0 at 50 msg/s per topic: frames and bytes
  (e) connection scale: concurrent Herald connections (bounded count and time)

Run: python -m loadtest.bench [--quick] [--only herald,nats] [--write-docs]   (or make bench)

The tables are printed; docs/BENCHMARKS.md and docs/img/ change only with --write-docs.
"""

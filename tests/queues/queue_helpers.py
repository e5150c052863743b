"""Helpers shared by the queue tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import uuid
from pathlib import Path

from fanout.queues import QueueService, open_queue_service

START = 1_700_000_000.0


class FakeClock:
    """A clock the test moves by hand (Unix seconds)."""

    def __init__(self, t: float = START) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_service(
    backend: str, redis_url: str, tmp_path: Path, clock: FakeClock, namespace: str | None = None
) -> QueueService:
    """A QueueService on `backend` ("sqlite" or "redis"), each test in its own namespace."""
    if backend == "redis":
        return open_queue_service(
            engine="redis",
            data_dir=tmp_path,
            redis_url=redis_url,
            clock=clock,
            namespace=namespace or f"t{uuid.uuid4().hex[:12]}",
        )
    return open_queue_service(engine="memory", data_dir=tmp_path, redis_url="", clock=clock)

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receiver import Receiver

from procs import HeraldServer


class _Stoppable(Protocol):
    def stop(self) -> object: ...


S = TypeVar("S", bound=_Stoppable)


def _stopped_afterwards(started: list[S]) -> Iterator[list[S]]:
    """Yield `started` for a test to fill, then stop each one of it."""
    yield started
    for p in started:
        p.stop()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    """Receivers a test starts; all stopped afterwards."""
    yield from _stopped_afterwards(list[Receiver]())


@pytest.fixture
def servers() -> Iterator[list[HeraldServer]]:
    """Herald servers a test starts; all stopped afterwards."""
    yield from _stopped_afterwards(list[HeraldServer]())


@pytest.fixture
def server(servers: list[HeraldServer]) -> HeraldServer:
    """A Herald server with the default environment."""
    started = HeraldServer().start()
    servers.append(started)
    return started


@pytest.fixture
def sink(receivers: list[Receiver]) -> Receiver:
    """A webhook receiver."""
    started = Receiver().start()
    receivers.append(started)
    return started

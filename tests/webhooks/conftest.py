from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receiver import Receiver

from procs import HeraldServer


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    """Receivers a test starts; all stopped afterwards."""
    started: list[Receiver] = []
    yield started
    for r in started:
        r.stop()


@pytest.fixture
def servers() -> Iterator[list[HeraldServer]]:
    started: list[HeraldServer] = []
    yield started
    for s in started:
        s.stop()

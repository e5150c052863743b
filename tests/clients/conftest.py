from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab import Control, Lab


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """Gateways for every client scenario (Python, Node, Chromium), stopped by PID."""
    lab = Lab()
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def control(lab: Lab) -> Iterator[Control]:
    ctl = Control(lab).start()
    try:
        yield ctl
    finally:
        ctl.stop()

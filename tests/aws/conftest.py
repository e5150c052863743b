"""Fixtures of the AWS suite: a real `herald serve` with SigV4 credentials, a real
moto server (the reference), and boto3 clients for Herald."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from aws_helpers import CREDENTIALS, make_client
from procs import HeraldServer, free_port, stop_pid, wait_port


@pytest.fixture(scope="session")
def herald_aws() -> Iterator[HeraldServer]:
    server = HeraldServer(env={"HERALD_AWS_CREDENTIALS": json.dumps(CREDENTIALS)})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A real moto server (`python -m moto.server`) on a free port, stopped by PID."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 30, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_pid(proc)


@pytest.fixture(scope="session")
def sqs(herald_aws: HeraldServer) -> Any:
    return make_client(herald_aws.http, "sqs")


@pytest.fixture(scope="session")
def sns(herald_aws: HeraldServer) -> Any:
    return make_client(herald_aws.http, "sns")

"""Fixtures of the AWS suite: a real `herald serve` with SigV4 credentials, a real
moto server (the reference), and boto3 clients for either."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from procs import HeraldServer, free_port, stop_pid, wait_port

KEY, SECRET = "AKIDHERALDTEST", "herald-test-secret"
LIMITED_KEY, LIMITED_SECRET = "AKIDLIMITED", "limited-secret"
CREDENTIALS = {
    KEY: {"secret": SECRET},
    LIMITED_KEY: {"secret": LIMITED_SECRET, "queues": ["team-*"], "topics": ["team-*"]},
}
REGION = "us-east-1"

Client = Callable[..., Any]


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


def make_client(url: str, service: str, key: str = KEY, secret: str = SECRET, **kw: Any) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, **kw),
    )


@pytest.fixture(scope="session")
def sqs(herald_aws: HeraldServer) -> Any:
    return make_client(herald_aws.http, "sqs")


@pytest.fixture(scope="session")
def sns(herald_aws: HeraldServer) -> Any:
    return make_client(herald_aws.http, "sns")

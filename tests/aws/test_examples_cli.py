"""The examples in examples/aws and the AWS CLI, unmodified, against a real herald serve:
only the endpoint and the credentials come from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aws_helpers import KEY, REGION, SECRET
from procs import ROOT, HeraldServer

pytestmark = pytest.mark.integration


def aws_env(server: HeraldServer, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": server.http,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        **extra,
    }


def run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_example_producer_then_consumer(herald_aws: HeraldServer) -> None:
    env = aws_env(herald_aws, QUEUE="example-orders", COUNT="25", WAIT="1")
    out = run([sys.executable, "examples/aws/producer.py"], env)
    assert "sent 25 messages" in out
    assert "handled 25 messages" in run([sys.executable, "examples/aws/consumer.py"], env)


def test_example_sns_fanout_with_filter_policies(herald_aws: HeraldServer) -> None:
    out = run([sys.executable, "examples/aws/sns_fanout.py"], aws_env(herald_aws))
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {
        "audit": [
            ["order", 150, "eu"],
            ["order", 50, "us"],
            ["order", 99.5, "eu"],
            ["refund", 200, "us"],
        ],
        "big-orders": [["order", 150, "eu"], ["refund", 200, "us"]],
        "eu-orders": [["order", 150, "eu"], ["order", 99.5, "eu"]],
        "not-refunds": [["order", 150, "eu"], ["order", 50, "us"], ["order", 99.5, "eu"]],
    }


def test_aws_cli_create_send_receive_delete(herald_aws: HeraldServer) -> None:
    env = aws_env(herald_aws)
    # AWS CLI v1 ignores AWS_ENDPOINT_URL: the endpoint is its one flag here.
    cli = [
        sys.executable,
        "-m",
        "awscli",
        "--endpoint-url",
        herald_aws.http,
        "--output",
        "json",
        "sqs",
    ]
    url = json.loads(run([*cli, "create-queue", "--queue-name", "cli-queue"], env))["QueueUrl"]
    sent = json.loads(
        run([*cli, "send-message", "--queue-url", url, "--message-body", "from the cli"], env)
    )
    got = json.loads(
        run([*cli, "receive-message", "--queue-url", url, "--wait-time-seconds", "1"], env)
    )
    (msg,) = got["Messages"]
    assert msg["Body"] == "from the cli" and msg["MessageId"] == sent["MessageId"]
    run([*cli, "delete-message", "--queue-url", url, "--receipt-handle", msg["ReceiptHandle"]], env)
    after = run([*cli, "receive-message", "--queue-url", url], env)
    assert "Messages" not in (json.loads(after) if after.strip() else {})
    run([*cli, "delete-queue", "--queue-url", url], env)

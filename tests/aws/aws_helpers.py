"""Credentials and boto3 client factory shared by the AWS suite."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

KEY, SECRET = "AKIDHERALDTEST", "herald-test-secret"
LIMITED_KEY, LIMITED_SECRET = "AKIDLIMITED", "limited-secret"
CREDENTIALS = {
    KEY: {"secret": SECRET},
    LIMITED_KEY: {"secret": LIMITED_SECRET, "queues": ["team-*"], "topics": ["team-*"]},
}
REGION = "us-east-1"


def make_client(url: str, service: str, key: str = KEY, secret: str = SECRET, **kw: Any) -> Any:
    """A boto3 client for `url` that does not retry (errors show at once)."""
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, **kw),
    )


def drain(sqs: Any, url: str, **kw: Any) -> list[dict[str, Any]]:
    """Receive and delete every visible message of the queue at `url`, in arrival order."""
    out: list[dict[str, Any]] = []
    while msgs := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, **kw).get("Messages"):
        out += msgs
        for m in msgs:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out

"""Every SQS action with parameters of every JSON shape: an AWS error, never a crash.

In-process (the SqsApi over a real SQLite queue store), so thousands of odd requests
take a second; tests/aws/test_sqs.py covers the same path over HTTP.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fanout.queues import QueueService, open_queue_service
from gateway.aws.errors import AwsError
from gateway.aws.sqs import SqsApi
from gateway.aws.sqs_messages import Caller
from shared.config import Settings

ODD_VALUES: list[Any] = [
    None,
    0,
    -1,
    10**30,
    1.5,
    "",
    "x" * 5000,
    [],
    [{}],
    [[1]],
    {},
    {"a": [1]},
    True,
]
FIELDS = [
    "QueueName", "QueueUrl", "Attributes", "tags", "Tags", "TagKeys", "AttributeNames",
    "MessageAttributeNames", "MessageSystemAttributeNames", "MessageBody", "MessageAttributes",
    "DelaySeconds", "MessageGroupId", "MessageDeduplicationId", "Entries", "ReceiptHandle",
    "VisibilityTimeout", "MaxNumberOfMessages", "WaitTimeSeconds", "MaxResults", "NextToken",
    "QueueNamePrefix", "Label", "AWSAccountIds", "Actions", "SourceArn", "DestinationArn",
    "TaskHandle",
]  # fmt: skip
ENTRY_FIELDS = ["Id", "MessageBody", "ReceiptHandle", "VisibilityTimeout", "MessageAttributes"]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[SqsApi]:
    svc: QueueService = open_queue_service(engine="memory", data_dir=tmp_path, redis_url="")
    await svc.start()
    try:
        yield SqsApi(svc, Settings())
    finally:
        await svc.close()


async def test_odd_parameter_shapes_answer_aws_errors(api: SqsApi) -> None:
    caller = Caller("k", None, "http://h")
    url = (await api.handle("CreateQueue", {"QueueName": "odd"}, caller))["QueueUrl"]
    await api.handle(
        "CreateQueue", {"QueueName": "odd.fifo", "Attributes": {"FifoQueue": "true"}}, caller
    )
    base = {"QueueUrl": url, "QueueName": "odd", "MessageBody": "b", "Label": "l",
            "SourceArn": "arn:aws:sqs:us-east-1:000000000000:odd"}  # fmt: skip
    refused = 0
    for action in api.actions:
        for field, value in itertools.product(FIELDS, ODD_VALUES):
            for params in ({**base, field: value}, {field: value}):
                try:
                    await api.handle(action, params, caller)
                except AwsError as exc:
                    assert exc.status < 500, (action, field, value, exc.code)
                    refused += 1
        # Batch entries whose own fields have odd shapes.
        if action.endswith("Batch"):
            for field, value in itertools.product(ENTRY_FIELDS, ODD_VALUES):
                entry = {"Id": "a", "MessageBody": "b", "ReceiptHandle": "x.y", field: value}
                try:
                    await api.handle(action, {"QueueUrl": url, "Entries": [entry]}, caller)
                except AwsError as exc:
                    assert exc.status < 500, (action, field, value, exc.code)
    assert refused > 1000  # the shapes were refused, not silently accepted

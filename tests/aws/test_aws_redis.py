"""The AWS API on the Redis engine: two `herald serve` processes share topics, queues and
subscriptions, so a publish through one reaches a subscription made through the other."""

from __future__ import annotations

import json
import time

import pytest

from aws_helpers import make_client
from procs import HeraldServer, RedisServer, running

pytestmark = pytest.mark.integration


def test_sns_to_sqs_across_two_processes(redis_server: RedisServer) -> None:
    env = {"HERALD_ENGINE": "redis", "HERALD_REDIS_URL": redis_server.url}
    a, b = HeraldServer(env=dict(env)), HeraldServer(env=dict(env))
    with running(a, b):
        sqs_a, sns_a = make_client(a.http, "sqs"), make_client(a.http, "sns")
        sqs_b, sns_b = make_client(b.http, "sqs"), make_client(b.http, "sns")
        topic = sns_a.create_topic(Name="orders")["TopicArn"]
        url = sqs_a.create_queue(QueueName="big")["QueueUrl"]
        arn = sqs_a.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns_a.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"FilterPolicy": json.dumps({"n": [{"numeric": [">", 1]}]})},
        )
        assert [t["TopicArn"] for t in sns_b.list_topics()["Topics"]] == [topic]
        # Process b learns of the new subscription through Redis pub/sub; publish until
        # it has (a publish before that finds no subscription and is not queued).
        deadline = time.monotonic() + 10
        got: list[dict[str, object]] = []
        while not got and time.monotonic() < deadline:
            for n in ("1", "2"):
                sns_b.publish(
                    TopicArn=topic,
                    Message=f"n={n}",
                    MessageAttributes={"n": {"DataType": "Number", "StringValue": n}},
                )
            got = sqs_b.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
        assert got, "the subscription never reached the other process"
        assert json.loads(got[0]["Body"])["Message"] == "n=2"
        sqs_a.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])

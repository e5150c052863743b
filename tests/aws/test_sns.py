"""SNS through boto3 against a real `herald serve`: topics, sqs subscriptions, filters,
envelopes, and the Herald side of it (WebSocket subscribers see SNS publishes)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from aws_helpers import CREDENTIALS, LIMITED_KEY, LIMITED_SECRET, drain, make_client
from procs import HeraldServer
from wsclient import collect, connect, subscribe

pytestmark = pytest.mark.integration


def queue(sqs: Any, fifo: bool = False) -> tuple[str, str]:
    name = f"sub-{uuid.uuid4().hex[:8]}" + (".fifo" if fifo else "")
    attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if fifo else {}
    url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def topic(sns: Any, fifo: bool = False) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}" + (".fifo" if fifo else "")
    attrs = {"FifoTopic": "true"} if fifo else {}
    return str(sns.create_topic(Name=name, Attributes=attrs)["TopicArn"])


def test_envelope_raw_and_attribute_filters(sqs: Any, sns: Any) -> None:
    arn = topic(sns)
    env_url, env_arn = queue(sqs)
    raw_url, raw_arn = queue(sqs)
    policy = {"price": [{"numeric": [">=", 10, "<", 100]}], "kind": [{"anything-but": ["x"]}]}
    sub = sns.subscribe(
        TopicArn=arn,
        Protocol="sqs",
        Endpoint=env_arn,
        Attributes={"FilterPolicy": json.dumps(policy)},
    )["SubscriptionArn"]
    sns.subscribe(
        TopicArn=arn, Protocol="sqs", Endpoint=raw_arn, Attributes={"RawMessageDelivery": "true"}
    )

    def publish(msg: str, price: str, kind: str) -> str:
        return str(
            sns.publish(
                TopicArn=arn,
                Message=msg,
                Subject="subj",
                MessageAttributes={
                    "price": {"DataType": "Number", "StringValue": price},
                    "kind": {"DataType": "String", "StringValue": kind},
                },
            )["MessageId"]
        )

    publish("cheap", "5", "a")
    ok_id = publish("fits", "10.50", "a")
    publish("excluded", "50", "x")
    publish("dear", "100", "a")
    got = drain(sqs, env_url)
    assert len(got) == 1
    envelope = json.loads(got[0]["Body"])
    assert envelope["Type"] == "Notification"
    assert envelope["MessageId"] == ok_id
    assert envelope["TopicArn"] == arn
    assert envelope["Message"] == "fits"
    assert envelope["Subject"] == "subj"
    assert envelope["MessageAttributes"]["price"] == {"Type": "Number", "Value": "10.50"}
    raw = drain(sqs, raw_url, MessageAttributeNames=["All"])
    assert sorted(m["Body"] for m in raw) == ["cheap", "dear", "excluded", "fits"]
    fits = next(m for m in raw if m["Body"] == "fits")
    assert fits["MessageAttributes"]["price"] == {"StringValue": "10.50", "DataType": "Number"}
    attrs = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert json.loads(attrs["FilterPolicy"]) == policy
    assert attrs["TopicArn"] == arn and attrs["Protocol"] == "sqs"
    # Changing the filter takes effect for the next publish.
    sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="FilterPolicy", AttributeValue='{"kind": ["x"]}'
    )
    publish("now-x", "1", "x")
    assert [json.loads(m["Body"])["Message"] for m in drain(sqs, env_url)] == ["now-x"]
    sns.unsubscribe(SubscriptionArn=sub)
    publish("gone", "1", "x")
    assert drain(sqs, env_url) == []


def test_body_scope_filter_and_publish_batch(sqs: Any, sns: Any) -> None:
    arn = topic(sns)
    url, qarn = queue(sqs)
    sns.subscribe(
        TopicArn=arn,
        Protocol="sqs",
        Endpoint=qarn,
        Attributes={
            "FilterPolicy": json.dumps({"order": {"region": ["eu"]}}),
            "FilterPolicyScope": "MessageBody",
            "RawMessageDelivery": "true",
        },
    )
    result = sns.publish_batch(
        TopicArn=arn,
        PublishBatchRequestEntries=[
            {"Id": "1", "Message": json.dumps({"order": {"region": "eu", "n": 1}})},
            {"Id": "2", "Message": json.dumps({"order": {"region": "us", "n": 2}})},
            {"Id": "3", "Message": "not json"},
            {
                "Id": "4",
                "Message": json.dumps({"order": {"region": "eu", "n": 4}}),
                "MessageAttributes": {
                    "tags": {"DataType": "String.Array", "StringValue": '["a","b"]'}
                },
            },
        ],
    )
    assert sorted(s["Id"] for s in result["Successful"]) == ["1", "2", "3", "4"]
    got = sorted(json.loads(m["Body"])["order"]["n"] for m in drain(sqs, url))
    assert got == [1, 4]
    with pytest.raises(ClientError) as exc:
        sns.publish_batch(
            TopicArn=arn,
            PublishBatchRequestEntries=[{"Id": "a", "Message": "1"}, {"Id": "a", "Message": "2"}],
        )
    assert exc.value.response["Error"]["Code"] == "BatchEntryIdsNotDistinct"


def test_fifo_topic_to_fifo_queue(sqs: Any, sns: Any) -> None:
    arn = topic(sns, fifo=True)
    url, qarn = queue(sqs, fifo=True)
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn)
    for i in range(3):
        sns.publish(
            TopicArn=arn, Message=f"m{i}", MessageGroupId="g", MessageDeduplicationId=f"d{i}"
        )
    sns.publish(TopicArn=arn, Message="dup", MessageGroupId="g", MessageDeduplicationId="d0")
    bodies = [json.loads(m["Body"])["Message"] for m in drain(sqs, url)]
    assert bodies == ["m0", "m1", "m2"]
    with pytest.raises(ClientError):
        sns.publish(TopicArn=arn, Message="no group")
    with pytest.raises(ClientError) as exc:  # no dedup id, no content-based dedup
        sns.publish(TopicArn=arn, Message="no dedup", MessageGroupId="g")
    assert exc.value.response["Error"]["Code"] == "InvalidParameter"
    sns.set_topic_attributes(
        TopicArn=arn, AttributeName="ContentBasedDeduplication", AttributeValue="true"
    )
    for body in ("same", "same", "other"):
        sns.publish(TopicArn=arn, Message=body, MessageGroupId="g")
    assert [json.loads(m["Body"])["Message"] for m in drain(sqs, url)] == ["same", "other"]


def test_topics_and_subscriptions_listing_and_errors(sqs: Any, sns: Any) -> None:
    arn = topic(sns)
    assert arn in [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    assert sns.create_topic(Name=arn.rsplit(":", 1)[1])["TopicArn"] == arn  # idempotent
    _, qarn = queue(sqs)
    sub = sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn)["SubscriptionArn"]
    assert sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn)["SubscriptionArn"] == sub
    listed = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert [s["SubscriptionArn"] for s in listed] == [sub]
    assert sub in [s["SubscriptionArn"] for s in sns.list_subscriptions()["Subscriptions"]]
    assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["SubscriptionsConfirmed"] == "1"
    with pytest.raises(ClientError) as exc:
        sns.publish(TopicArn=arn + "-missing", Message="x")
    assert exc.value.response["Error"]["Code"] == "NotFound"
    with pytest.raises(ClientError) as exc:
        sns.subscribe(
            TopicArn=arn, Protocol="sqs", Endpoint=qarn, Attributes={"FilterPolicy": "{bad"}
        )
    assert exc.value.response["Error"]["Code"] == "InvalidParameter"
    sns.delete_topic(TopicArn=arn)
    assert arn not in [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    assert sub not in [s["SubscriptionArn"] for s in sns.list_subscriptions()["Subscriptions"]]


async def test_websocket_clients_see_sns_publishes(sns: Any, herald_aws: HeraldServer) -> None:
    arn = topic(sns)
    name = arn.rsplit(":", 1)[1]
    ws = await connect(herald_aws.ws)
    try:
        await subscribe(ws, name)
        await asyncio.to_thread(
            sns.publish,
            TopicArn=arn,
            Message="live",
            MessageAttributes={"n": {"DataType": "Number", "StringValue": "7"}},
        )
        (msg,) = await collect(ws, 1)
    finally:
        await ws.close()
    assert msg["topic"] == name and msg["data"] == "live"
    assert msg["attributes"]["n"] == 7


def test_unsupported_protocols_are_refused_clearly(sns: Any) -> None:
    arn = topic(sns)
    with pytest.raises(ClientError) as exc:
        sns.subscribe(TopicArn=arn, Protocol="email", Endpoint="a@example.com")
    assert exc.value.response["Error"]["Code"] == "InvalidParameter"
    assert "'https'" in exc.value.response["Error"]["Message"]


def test_native_api_shows_sns_subscriptions_and_sqs_tags(
    sqs: Any, sns: Any, herald_aws: HeraldServer
) -> None:
    arn = topic(sns)
    url, qarn = queue(sqs)
    sqs.tag_queue(QueueUrl=url, Tags={"team": "t"})
    sub = sns.subscribe(
        TopicArn=arn, Protocol="sqs", Endpoint=qarn, Attributes={"RawMessageDelivery": "true"}
    )["SubscriptionArn"]
    name = qarn.rsplit(":", 1)[1]
    info = httpx.get(f"{herald_aws.http}/v1/queues/{name}").json()
    assert info["tags"] == {"team": "t"}
    subs = httpx.get(f"{herald_aws.http}/v1/subscriptions").json()["subscriptions"]
    (mine,) = [s for s in subs if s["queue"] == name]
    assert mine["topic"] == arn.rsplit(":", 1)[1]
    assert mine["options"]["subscription_arn"] == sub
    assert mine["options"]["attributes"] == {"RawMessageDelivery": "true"}


def test_publishes_share_the_http_publish_rate_limit_per_access_key() -> None:
    env = {
        "HERALD_AWS_CREDENTIALS": json.dumps(CREDENTIALS),
        "HERALD_HTTP_PUBLISH_RATE": "0.01",
        "HERALD_HTTP_PUBLISH_BURST": "3",
    }
    server = HeraldServer(env=env).start()
    try:
        sns = make_client(server.http, "sns")
        arn = topic(sns)
        sns.publish(TopicArn=arn, Message="1")
        sns.publish_batch(
            TopicArn=arn,
            PublishBatchRequestEntries=[{"Id": "a", "Message": "2"}, {"Id": "b", "Message": "3"}],
        )
        with pytest.raises(ClientError) as exc:
            sns.publish(TopicArn=arn, Message="4")
        assert exc.value.response["Error"]["Code"] == "Throttled"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        # Another access key has its own bucket.
        other = make_client(server.http, "sns", key=LIMITED_KEY, secret=LIMITED_SECRET)
        other.create_topic(Name="team-x")
        other.publish(TopicArn=arn.rsplit(":", 1)[0] + ":team-x", Message="5")
    finally:
        server.stop()


def test_topic_attributes_are_a_bounded_known_set(sns: Any) -> None:
    arn = topic(sns)
    sns.set_topic_attributes(TopicArn=arn, AttributeName="DisplayName", AttributeValue="Orders")
    assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["DisplayName"] == "Orders"
    for name, value in (("Whatever", "x"), ("Policy", "x" * 40_000)):
        with pytest.raises(ClientError) as exc:
            sns.set_topic_attributes(TopicArn=arn, AttributeName=name, AttributeValue=value)
        assert exc.value.response["Error"]["Code"] == "InvalidParameter"
    with pytest.raises(ClientError):
        sns.create_topic(Name=f"t-{uuid.uuid4().hex[:8]}", Attributes={"Nope": "1"})

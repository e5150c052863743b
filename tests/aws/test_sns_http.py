"""SNS http subscriptions through boto3 against a real `herald serve`, delivered to a
real local HTTP receiver: SubscriptionConfirmation, ConfirmSubscription, the SNS
Notification envelope, raw delivery, and the subscription actions."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from procs import running

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "webhooks"))

from receiver import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running(r := Receiver()):
        yield r


def sns_post(call: Any, kind: str, arn: str) -> dict[str, Any]:
    """The JSON body of an SNS POST of type `kind` from topic `arn`, headers and body checked."""
    assert call.headers["x-amz-sns-message-type"] == kind
    assert call.headers["x-amz-sns-topic-arn"] == arn
    body: dict[str, Any] = json.loads(call.body)
    assert body["Type"] == kind
    assert body["TopicArn"] == arn
    return body


def subscribe_confirmed(sns: Any, receiver: Receiver, attrs: dict[str, str]) -> tuple[str, str]:
    """Subscribe the receiver to a new topic and confirm with the token it was POSTed."""
    arn = sns.create_topic(Name=f"h-{uuid.uuid4().hex[:8]}")["TopicArn"]
    out = sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=receiver.url, Attributes=attrs)
    assert out["SubscriptionArn"] == "pending confirmation"
    confirmation = sns_post(receiver.wait_calls(1)[0], "SubscriptionConfirmation", arn)
    assert confirmation["SubscribeURL"].startswith("http")
    with pytest.raises(ClientError) as err:
        sns.confirm_subscription(TopicArn=arn, Token="not-the-token")
    assert err.value.response["Error"]["Code"] == "InvalidParameter"
    sub_arn = sns.confirm_subscription(TopicArn=arn, Token=confirmation["Token"])["SubscriptionArn"]
    assert sub_arn.startswith(arn + ":")
    return arn, sub_arn


def test_http_subscription_confirm_and_envelope(sns: Any, receiver: Receiver) -> None:
    arn, sub_arn = subscribe_confirmed(
        sns, receiver, {"FilterPolicy": json.dumps({"kind": ["keep"]})}
    )
    attrs = sns.get_subscription_attributes(SubscriptionArn=sub_arn)["Attributes"]
    assert attrs["Protocol"] == "http"
    assert attrs["Endpoint"] == receiver.url
    assert attrs["PendingConfirmation"] == "false"
    listed = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert [(s["SubscriptionArn"], s["Protocol"]) for s in listed] == [(sub_arn, "http")]
    sns.publish(
        TopicArn=arn,
        Message="dropped",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "drop"}},
    )
    msg_id = sns.publish(
        TopicArn=arn,
        Message="hello",
        Subject="greeting",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "keep"}},
    )["MessageId"]
    call = receiver.wait_calls(2)[1]
    assert call.headers["x-amz-sns-subscription-arn"] == sub_arn
    envelope = sns_post(call, "Notification", arn)
    assert envelope["MessageId"] == msg_id
    assert envelope["Subject"] == "greeting"
    assert envelope["Message"] == "hello"
    assert envelope["MessageAttributes"] == {"kind": {"Type": "String", "Value": "keep"}}
    assert "Timestamp" in envelope
    sns.unsubscribe(SubscriptionArn=sub_arn)
    assert sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"] == []


def test_http_raw_delivery_set_later(sns: Any, receiver: Receiver) -> None:
    arn, sub_arn = subscribe_confirmed(sns, receiver, {})
    sns.set_subscription_attributes(
        SubscriptionArn=sub_arn, AttributeName="RawMessageDelivery", AttributeValue="true"
    )
    sns.publish(TopicArn=arn, Message='{"a": 1}')
    call = receiver.wait_calls(2)[1]
    assert call.body == b'{"a": 1}'
    assert call.headers["x-amz-sns-message-type"] == "Notification"


def test_http_subscription_refuses_bad_endpoint_and_redrive(sns: Any) -> None:
    arn = sns.create_topic(Name=f"h-{uuid.uuid4().hex[:8]}")["TopicArn"]
    for endpoint, attrs in [
        ("ftp://example.invalid/x", {}),
        ("http://127.0.0.1:9/x", {"RedrivePolicy": json.dumps({"deadLetterTargetArn": "x"})}),
    ]:
        with pytest.raises(ClientError) as err:
            sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=endpoint, Attributes=attrs)
        assert err.value.response["Error"]["Code"] == "InvalidParameter"

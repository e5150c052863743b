"""boto3 against a real `herald serve`: SQS behaviour the SDK checks or relies on."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from procs import HeraldServer

pytestmark = pytest.mark.integration


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def new_queue(sqs: Any, prefix: str = "q", **attrs: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}" + (".fifo" if attrs.get("FifoQueue") else "")
    return str(sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"])


def test_send_receive_delete_with_attributes_and_exact_md5(sqs: Any) -> None:
    url = new_queue(sqs)
    attrs = {
        "s": {"DataType": "String", "StringValue": "héllo"},
        "n": {"DataType": "Number", "StringValue": "1.50"},
        "b": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        "c": {"DataType": "String.custom", "StringValue": "x"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="body ✓", MessageAttributes=attrs)
    # boto3 checks both digests itself and raises on a mismatch; check them here too.
    assert sent["MD5OfMessageBody"] == hashlib.md5("body ✓".encode()).hexdigest()
    got = sqs.receive_message(
        QueueUrl=url,
        WaitTimeSeconds=1,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
    )["Messages"]
    assert len(got) == 1
    m = got[0]
    assert m["Body"] == "body ✓"
    assert m["MessageId"] == sent["MessageId"]
    assert m["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert m["MessageAttributes"]["b"] == {"BinaryValue": b"\x00\xff", "DataType": "Binary"}
    assert m["MessageAttributes"]["n"] == {"StringValue": "1.50", "DataType": "Number"}
    assert m["MessageAttributes"]["c"]["DataType"] == "String.custom"
    assert m["Attributes"]["ApproximateReceiveCount"] == "1"
    assert abs(int(m["Attributes"]["SentTimestamp"]) - time.time() * 1000) < 60_000
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_md5_of_attributes_matches_the_published_algorithm(sqs: Any) -> None:
    url = new_queue(sqs)
    sent = sqs.send_message(
        QueueUrl=url,
        MessageBody="x",
        MessageAttributes={"a": {"DataType": "String", "StringValue": "v"}},
    )
    # name, type, transport 1, value; each length-prefixed (4 bytes, big endian).
    raw = b"\x00\x00\x00\x01a\x00\x00\x00\x06String\x01\x00\x00\x00\x01v"
    assert sent["MD5OfMessageAttributes"] == hashlib.md5(raw).hexdigest()


def test_queue_attributes_counts_and_errors(sqs: Any) -> None:
    url = new_queue(sqs, VisibilityTimeout="7", DelaySeconds="0", MaximumMessageSize="2048")
    sqs.send_message(QueueUrl=url, MessageBody="a")
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    sqs.receive_message(QueueUrl=url)
    sqs.send_message(QueueUrl=url, MessageBody="b")
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "1"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"
    assert attrs["VisibilityTimeout"] == "7"
    assert attrs["QueueArn"].endswith(":" + url.rsplit("/", 1)[1])
    with pytest.raises(ClientError) as exc:
        sqs.send_message(QueueUrl=url, MessageBody="x" * 3000)
    assert code(exc) == "InvalidParameterValue"
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName="no-such-queue-anywhere")
    with pytest.raises(ClientError) as exc:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Nope"])
    assert code(exc) == "InvalidAttributeName"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"ReceiveMessageWaitTimeSeconds": "2"})
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ReceiveMessageWaitTimeSeconds"])
    assert got["Attributes"] == {"ReceiveMessageWaitTimeSeconds": "2"}
    with pytest.raises(ClientError) as exc:
        sqs.create_queue(QueueName=url.rsplit("/", 1)[1], Attributes={"VisibilityTimeout": "8"})
    assert code(exc) == "QueueAlreadyExists"
    sqs.purge_queue(QueueUrl=url)
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.delete_queue(QueueUrl=url)


def test_batches_and_batch_errors(sqs: Any) -> None:
    url = new_queue(sqs)
    with pytest.raises(ClientError) as exc:
        sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "1"}, {"Id": "a", "MessageBody": "2"}]
        )
    assert code(exc) == "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
    with pytest.raises(ClientError) as exc:
        sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(11)]
        )
    assert code(exc) == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    result = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "ok", "MessageBody": "fine"},
            {
                "Id": "bad",
                "MessageBody": "x",
                "MessageAttributes": {"a": {"DataType": "Bogus", "StringValue": "1"}},
            },
        ],
    )
    assert [s["Id"] for s in result["Successful"]] == ["ok"]
    assert result["Failed"][0]["Id"] == "bad" and result["Failed"][0]["SenderFault"]
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    deleted = sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "m", "ReceiptHandle": msgs[0]["ReceiptHandle"]},
            {"Id": "n", "ReceiptHandle": "junk"},
        ],
    )
    assert [s["Id"] for s in deleted["Successful"]] == ["m"]
    assert deleted["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"


def test_visibility_changes_and_long_poll(sqs: Any) -> None:
    url = new_queue(sqs, VisibilityTimeout="30")
    sqs.send_message(QueueUrl=url, MessageBody="v")
    m = sqs.receive_message(QueueUrl=url)["Messages"][0]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
    )
    again = sqs.receive_message(
        QueueUrl=url, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"][0]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"
    batch = sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "new", "ReceiptHandle": again["ReceiptHandle"], "VisibilityTimeout": 0},
            {"Id": "old", "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0},
        ],
    )
    assert [s["Id"] for s in batch["Successful"]] == ["new"]
    assert [f["Id"] for f in batch["Failed"]] == ["old"]
    # A long poll returns as soon as a message arrives: the message is there first.
    sqs.receive_message(QueueUrl=url)  # take the visible one
    sqs.send_message(QueueUrl=url, MessageBody="w")
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
    assert got[0]["Body"] == "w"


def test_fifo_order_dedup_and_group_rules(sqs: Any) -> None:
    url = new_queue(sqs, "f", FifoQueue="true")
    with pytest.raises(ClientError) as exc:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert code(exc) == "InvalidParameterValue"  # no dedup id, no content dedup
    ids = [
        sqs.send_message(
            QueueUrl=url,
            MessageBody=f"m{i}",
            MessageGroupId="g",
            MessageDeduplicationId=f"d{i % 3}",
        )["MessageId"]
        for i in range(4)
    ]
    assert ids[3] == ids[0]  # a duplicate within the window answers the first id
    bodies = []
    # Herald hands out one message per group at a time (docs/aws.md); AWS may give more.
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        bodies += [m["Body"] for m in got]
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert bodies == ["m0", "m1", "m2"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"ContentBasedDeduplication": "true"})
    sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="h")


def test_dead_letter_queue_and_move_task(sqs: Any) -> None:
    dlq = new_queue(sqs, "dlq")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"})
    src = new_queue(sqs, "src", RedrivePolicy=policy, VisibilityTimeout="0")
    sqs.send_message(QueueUrl=src, MessageBody="poison")
    sqs.receive_message(QueueUrl=src)
    assert "Messages" not in sqs.receive_message(QueueUrl=src)
    assert sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=0)["Messages"][0]["Body"] == "poison"
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [src]
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
    assert tasks[0]["Status"] == "COMPLETED"
    assert tasks[0]["ApproximateNumberOfMessagesMoved"] == 1
    with pytest.raises(ClientError):
        sqs.cancel_message_move_task(TaskHandle=handle)
    assert sqs.receive_message(QueueUrl=src)["Messages"][0]["Body"] == "poison"


def test_list_queues_prefix_pagination_tags_permissions(sqs: Any) -> None:
    prefix = f"list-{uuid.uuid4().hex[:6]}"
    urls = [sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(3)]
    page = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2)
    assert page["QueueUrls"] == urls[:2]
    rest = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=page["NextToken"])
    assert rest["QueueUrls"] == urls[2:] and "NextToken" not in rest
    sqs.tag_queue(QueueUrl=urls[0], Tags={"team": "a", "env": "dev"})
    sqs.untag_queue(QueueUrl=urls[0], TagKeys=["env"])
    assert sqs.list_queue_tags(QueueUrl=urls[0])["Tags"] == {"team": "a"}
    sqs.add_permission(
        QueueUrl=urls[0], Label="p1", AWSAccountIds=["111122223333"], Actions=["SendMessage"]
    )
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=urls[0], AttributeNames=["Policy"])["Attributes"][
            "Policy"
        ]
    )
    assert policy["Statement"][0]["Sid"] == "p1"
    sqs.remove_permission(QueueUrl=urls[0], Label="p1")
    with pytest.raises(ClientError) as exc:
        sqs.remove_permission(QueueUrl=urls[0], Label="p1")
    assert code(exc) == "InvalidParameterValue"


def test_native_api_sees_the_same_queue(sqs: Any, herald_aws: HeraldServer) -> None:
    url = new_queue(sqs, "shared")
    name = url.rsplit("/", 1)[1]
    sqs.send_message(QueueUrl=url, MessageBody="from boto3")
    got = httpx.post(f"{herald_aws.http}/v1/queues/{name}/receive", json={"max": 1}).json()
    assert got["messages"][0]["body"] == "from boto3"
    httpx.post(f"{herald_aws.http}/v1/queues/{name}/messages", json={"body": {"k": 1}})
    m = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]
    assert json.loads(m["Body"]) == {"k": 1}


def test_hostile_bodies_get_aws_errors_not_500(herald_aws: HeraldServer) -> None:
    headers = {
        "X-Amz-Target": "AmazonSQS.SendMessage",
        "Content-Type": "application/x-amz-json-1.0",
    }
    for body in (b"{not json", b"[1]", json.dumps({"QueueUrl": 5}).encode()):
        r = httpx.post(herald_aws.http, content=body, headers=headers)
        assert 400 <= r.status_code < 500, r.text
    r = httpx.post(
        herald_aws.http,
        content=b"Action=Nope",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code in (400, 403) and b"<ErrorResponse" in r.content


def test_hostile_parameters_get_4xx(sqs: Any, herald_aws: HeraldServer) -> None:
    url = new_queue(sqs)
    too_many = {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)}
    for attrs in (
        too_many,
        {"x" * 300: {"DataType": "String", "StringValue": "v"}},
        {"AWS.DataTypes": {"DataType": "String", "StringValue": "{}"}},
        {"n": {"DataType": "Number", "StringValue": "not a number"}},
        {"b": {"DataType": "Binary", "BinaryValue": b""}},
    ):
        with pytest.raises(ClientError) as exc:
            sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=attrs)
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as exc:
        sqs.send_message(QueueUrl=url, MessageBody="bad \x00 char")
    assert code(exc) == "InvalidMessageContents"
    with pytest.raises(ClientError) as exc:
        sqs.list_queues(MaxResults=5, NextToken="%%%not-base64")
    assert code(exc) == "InvalidParameterValue"
    form = "&".join(f"k{i}=v" for i in range(5000))
    r = httpx.post(
        herald_aws.http + "/aws",
        content=f"Action=ListTopics&{form}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400 and b"MalformedQueryString" in r.content


def test_native_senders_cannot_poison_sqs_receives(sqs: Any, herald_aws: HeraldServer) -> None:
    """Reserved attribute names set by a native sender or publisher are only data."""
    url = new_queue(sqs, "poison")
    name = url.rsplit("/", 1)[1]
    for attrs in (
        {"AWS.DataTypes": '{"b": "Binary", "n": 5}', "b": "not base64!", "n": "1"},
        {"AWS.DataTypes": "[1, 2]", "x": "y"},
        {"AWS.DataTypes": "{not json", "x": "y"},
    ):
        r = httpx.post(
            f"{herald_aws.http}/v1/queues/{name}/messages", json={"body": "b", "attributes": attrs}
        )
        assert r.status_code == 201, r.text
    got = []
    while msgs := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages"):
        got += msgs
        for m in msgs:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert len(got) == 3
    first = next(m for m in got if "b" in m.get("MessageAttributes", {}))
    assert first["MessageAttributes"]["b"] == {"StringValue": "not base64!", "DataType": "String"}

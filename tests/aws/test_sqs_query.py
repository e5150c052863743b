"""SQS in the query protocol (form + XML, as SDKs before the JSON protocol speak it):
the same hand-made, SigV4-signed requests against Herald and against moto, compared."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from aws_helpers import KEY, REGION, SECRET
from procs import HeraldServer

pytestmark = pytest.mark.integration

_VOLATILE = {"MessageId", "ReceiptHandle", "RequestId", "SentTimestamp", "CreatedTimestamp",
             "LastModifiedTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId"}  # fmt: skip


def call(url: str, form: dict[str, str], path: str = "/") -> tuple[int, Any]:
    body = urlencode({**form, "Version": "2012-11-05"}).encode()
    request = AWSRequest(
        method="POST",
        url=url + path,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials(KEY, SECRET), "sqs", REGION).add_auth(request)
    r = httpx.post(url + path, content=body, headers=dict(request.headers.items()))
    return r.status_code, simplify(ET.fromstring(r.content), url)


def simplify(el: ET.Element, url: str) -> Any:
    """XML as nested lists of (tag, value), namespaces, ids and times left out."""
    tag = el.tag.split("}")[-1]
    if tag in _VOLATILE:
        return (tag, "<volatile>")
    children = [simplify(c, url) for c in el]
    if not children:
        text = (el.text or "").replace(url, "<url>")
        return (tag, text.replace("123456789012", "<account>").replace("000000000000", "<account>"))
    if tag == "Attribute":  # both sides order attributes their own way
        return (tag, children)
    return (tag, sorted(children, key=repr) if tag.endswith("Result") else children)


def scenario(url: str, s: str) -> list[tuple[str, int, Any]]:
    out: list[tuple[str, int, Any]] = []

    def step(label: str, form: dict[str, str], path: str = "/") -> Any:
        status, doc = call(url, form, path)
        out.append((label, status, doc))
        return doc

    step("create", {"Action": "CreateQueue", "QueueName": f"qp-{s}",
                    "Attribute.1.Name": "VisibilityTimeout", "Attribute.1.Value": "40"})  # fmt: skip
    queue_url = f"{url}/{account(url, s)}/qp-{s}"
    step("url", {"Action": "GetQueueUrl", "QueueName": f"qp-{s}"})
    step("send", {"Action": "SendMessage", "QueueUrl": queue_url, "MessageBody": "hello",
                  "MessageAttribute.1.Name": "n", "MessageAttribute.1.Value.DataType": "Number",
                  "MessageAttribute.1.Value.StringValue": "1.5",
                  "MessageAttribute.2.Name": "s", "MessageAttribute.2.Value.DataType": "String",
                  "MessageAttribute.2.Value.StringValue": "x"})  # fmt: skip
    step("batch", {"Action": "SendMessageBatch", "QueueUrl": queue_url,
                   "SendMessageBatchRequestEntry.1.Id": "a",
                   "SendMessageBatchRequestEntry.1.MessageBody": "a",
                   "SendMessageBatchRequestEntry.2.Id": "b",
                   "SendMessageBatchRequestEntry.2.MessageBody": "b"})  # fmt: skip
    step("attributes", {"Action": "GetQueueAttributes", "QueueUrl": queue_url,
                        "AttributeName.1": "VisibilityTimeout",
                        "AttributeName.2": "ApproximateNumberOfMessages"})  # fmt: skip
    got = step("receive", {"Action": "ReceiveMessage", "QueueUrl": queue_url,
                           "MaxNumberOfMessages": "10", "MessageAttributeName.1": "All",
                           "AttributeName.1": "ApproximateReceiveCount"})  # fmt: skip
    del got
    step("missing", {"Action": "GetQueueUrl", "QueueName": f"nope-{s}"})
    step("list", {"Action": "ListQueues", "QueueNamePrefix": f"qp-{s}"})
    step("delete", {"Action": "DeleteQueue", "QueueUrl": queue_url})
    return out


def account(url: str, s: str) -> str:
    _, doc = call(url, {"Action": "GetQueueUrl", "QueueName": f"qp-{s}"})
    text = repr(doc)
    return "123456789012" if "123456789012" in text else "000000000000"


def error_code(doc: Any) -> str:
    (error,) = [v for tag, v in doc[1] if tag == "Error"]
    return str(dict(error)["Code"])


def test_query_protocol_matches_moto(herald_aws: HeraldServer, moto_url: str) -> None:
    s = uuid.uuid4().hex[:8]
    ours, theirs = scenario(herald_aws.http, s), scenario(moto_url, s)
    for (label, status, doc), (_, their_status, their_doc) in zip(ours, theirs, strict=True):
        if status >= 400:
            # Error texts differ (moto adds a lowercase <message>); the codes must not.
            doc, their_doc = error_code(doc), error_code(their_doc)
        if label == "receive":
            # Message order within one receive is not specified: compare as a set.
            doc = (doc[0], sorted(map(repr, doc[1])))
            their_doc = (their_doc[0], sorted(map(repr, their_doc[1])))
        assert (status, doc) == (their_status, their_doc), label


def test_query_protocol_on_the_queue_url(herald_aws: HeraldServer) -> None:
    s = uuid.uuid4().hex[:8]
    call(herald_aws.http, {"Action": "CreateQueue", "QueueName": f"qu-{s}"})
    status, doc = call(
        herald_aws.http,
        {"Action": "SendMessage", "MessageBody": "via path"},
        path=f"/000000000000/qu-{s}",
    )
    assert status == 200 and doc[0] == "SendMessageResponse"
    status, doc = call(herald_aws.http, {"Action": "GetQueueUrl", "QueueName": f"none-{s}"})
    assert status == 400 and "AWS.SimpleQueueService.NonExistentQueue" in repr(doc)

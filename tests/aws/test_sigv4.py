"""SigV4: requests are checked against HERALD_AWS_CREDENTIALS; dev mode takes anyone."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from aws_helpers import LIMITED_KEY, LIMITED_SECRET, SECRET, make_client
from gateway.aws import sigv4
from gateway.aws.errors import AwsError
from procs import HeraldServer


def _signed(body: bytes, secret: str = "s3cret") -> AWSRequest:
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:8080/aws",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Host": "127.0.0.1:8080"},
    )
    SigV4Auth(Credentials("AKID", secret), "sns", "eu-west-1").add_auth(request)
    return request


def _verify(request: AWSRequest, secret: str, body: bytes) -> None:
    signed = sigv4.parse(request.headers["Authorization"])
    sigv4.verify(
        signed,
        secret,
        method="POST",
        path="/aws",
        query="",
        headers=list(request.headers.items()),
        body=body,
    )


def test_botocore_signature_verifies_and_tampering_fails() -> None:
    body = b"Action=ListTopics&Version=2010-03-31"
    request = _signed(body)
    _verify(request, "s3cret", body)
    with pytest.raises(AwsError) as exc:
        _verify(request, "other", body)
    assert exc.value.code == "SignatureDoesNotMatch"
    with pytest.raises(AwsError) as exc:
        _verify(request, "s3cret", body + b"&x=1")
    assert exc.value.code == "SignatureDoesNotMatch"


def test_stale_and_malformed_signatures_fail() -> None:
    body = b"Action=ListTopics"
    request = _signed(body)
    signed = sigv4.parse(request.headers["Authorization"])
    with pytest.raises(AwsError) as exc:
        sigv4.verify(
            signed,
            "s3cret",
            method="POST",
            path="/aws",
            query="",
            headers=list(request.headers.items()),
            body=body,
            now=time.time() + 3600,
        )
    assert exc.value.code == "SignatureDoesNotMatch"
    for header in (None, "", "Basic abc", "AWS4-HMAC-SHA256 Credential=x"):
        with pytest.raises(AwsError) as exc:
            sigv4.parse(header)
        assert exc.value.status == 403


@pytest.mark.integration
def test_bad_secret_and_unknown_key_get_aws_errors(herald_aws: HeraldServer) -> None:
    bad = make_client(herald_aws.http, "sqs", secret=SECRET + "x")
    with pytest.raises(ClientError) as exc:
        bad.list_queues()
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = make_client(herald_aws.http, "sns", key="AKIDNOBODY")
    with pytest.raises(ClientError) as exc:
        unknown.list_topics()
    assert exc.value.response["Error"]["Code"] == "InvalidClientTokenId"


@pytest.mark.integration
def test_a_key_uses_only_its_queues_and_topics(herald_aws: HeraldServer, sqs: Any) -> None:
    limited = make_client(herald_aws.http, "sqs", key=LIMITED_KEY, secret=LIMITED_SECRET)
    other = sqs.create_queue(QueueName=f"other-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    mine = limited.create_queue(QueueName=f"team-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    with pytest.raises(ClientError) as exc:
        limited.send_message(QueueUrl=other, MessageBody="x")
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    listed = limited.list_queues().get("QueueUrls", [])
    assert mine in listed and other not in listed
    sns = make_client(herald_aws.http, "sns", key=LIMITED_KEY, secret=LIMITED_SECRET)
    with pytest.raises(ClientError) as exc:
        sns.create_topic(Name="not-mine")
    assert exc.value.response["Error"]["Code"] == "AuthorizationError"


@pytest.mark.integration
def test_dev_mode_accepts_any_credentials_loudly() -> None:
    server = HeraldServer().start()
    try:
        sqs = make_client(server.http, "sqs", key="ANYKEY", secret="anything")
        assert "QueueUrl" in sqs.create_queue(QueueName="dev")
    finally:
        server.stop()
    assert "AWS API in DEV MODE" in server.output() and "ANYKEY" in server.output()


@pytest.mark.integration
def test_herald_auth_on_without_aws_credentials_refuses_aws_calls() -> None:
    server = HeraldServer(env={"HERALD_API_KEYS": "native-key"}).start()
    try:
        sqs = make_client(server.http, "sqs", key="ANYKEY", secret="anything")
        with pytest.raises(ClientError) as exc:
            sqs.list_queues()
        assert exc.value.response["Error"]["Code"] == "InvalidClientTokenId"
    finally:
        server.stop()
    assert "DEV MODE" not in server.output()


@pytest.mark.integration
def test_the_aws_prefix_endpoint_signs_and_serves(herald_aws: HeraldServer) -> None:
    sqs = make_client(herald_aws.http + "/aws", "sqs")
    url = sqs.create_queue(QueueName="prefixed")["QueueUrl"]
    assert url.startswith(herald_aws.http + "/aws/")
    sqs.send_message(QueueUrl=url, MessageBody="x")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "x"
    sns = make_client(herald_aws.http + "/aws", "sns")
    assert "TopicArn" in sns.create_topic(Name="prefixed")

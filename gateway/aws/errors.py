"""AWS errors in the shapes the SDKs parse: SQS JSON (query-compatible) and SNS XML."""

from __future__ import annotations

import uuid
from xml.sax.saxutils import escape

import orjson
from starlette.responses import Response

# SQS error codes whose query-protocol code differs (the `x-amzn-query-error`
# header carries it; botocore then reports that code, as AWS does).
SQS_QUERY_CODES = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    "QueueNameExists": "QueueAlreadyExists",
    "BatchEntryIdsNotDistinct": "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
    "TooManyEntriesInBatchRequest": "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    "EmptyBatchRequest": "AWS.SimpleQueueService.EmptyBatchRequest",
    "InvalidBatchEntryId": "AWS.SimpleQueueService.InvalidBatchEntryId",
    "BatchRequestTooLong": "AWS.SimpleQueueService.BatchRequestTooLong",
    "MessageNotInflight": "AWS.SimpleQueueService.MessageNotInflight",
    "UnsupportedOperation": "AWS.SimpleQueueService.UnsupportedOperation",
    "PurgeQueueInProgress": "AWS.SimpleQueueService.PurgeQueueInProgress",
}


class AwsError(Exception):
    """An error answered to an AWS client; `code` is AWS's own."""

    def __init__(self, code: str, message: str, status: int = 400, *, sender: bool = True):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.sender = sender


def invalid(message: str) -> AwsError:
    return AwsError("InvalidParameterValue", message)


def missing(name: str) -> AwsError:
    return AwsError("MissingParameter", f"The request must contain the parameter {name}.")


def request_id() -> str:
    return str(uuid.uuid4())


def sqs_error(exc: AwsError) -> Response:
    """The JSON-protocol error: `__type` plus the query-compatible code header."""
    fault = "Sender" if exc.sender else "Receiver"
    query_code = SQS_QUERY_CODES.get(exc.code, exc.code)
    body = orjson.dumps({"__type": f"com.amazonaws.sqs#{exc.code}", "message": exc.message})
    return Response(
        body,
        status_code=exc.status,
        media_type="application/x-amz-json-1.0",
        headers={
            "x-amzn-query-error": f"{query_code};{fault}",
            "x-amzn-RequestId": request_id(),
        },
    )


def xml_error(exc: AwsError, namespace: str) -> Response:
    """The query-protocol (XML) error of SNS."""
    fault = "Sender" if exc.sender else "Receiver"
    rid = request_id()
    body = (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>{fault}</Type>'
        f"<Code>{escape(exc.code)}</Code><Message>{escape(exc.message)}</Message></Error>"
        f"<RequestId>{rid}</RequestId></ErrorResponse>"
    )
    return Response(
        body, status_code=exc.status, media_type="text/xml", headers={"x-amzn-RequestId": rid}
    )

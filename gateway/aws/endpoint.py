"""One endpoint for SQS and SNS: `POST /` and `POST /aws` on the gateway's port.

Requests are told apart by protocol: `X-Amz-Target: AmazonSQS.<Action>` is SQS in
the JSON protocol; a form body with `Action=` is the query protocol (SNS).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.aws import sigv4, sqs_query
from gateway.aws.errors import AwsError, sqs_error, xml_error
from gateway.aws.sqs import SqsApi
from gateway.aws.sqs_messages import Caller
from gateway.publish_limit import check_publish_rate
from shared.auth import Principal
from shared.config import Settings
from shared.errors import RateLimited

if TYPE_CHECKING:
    from fanout.node import Node

log = logging.getLogger("herald.aws")
router = APIRouter(include_in_schema=False)
SNS_NAMESPACE = "http://sns.amazonaws.com/doc/2010-03-31/"
SQS_NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"


class AwsGateway:
    """The SQS and SNS APIs of one process, with request authentication."""

    def __init__(self, node: Node) -> None:
        if node.queues is None:
            raise AwsError("ServiceUnavailable", "queues are not enabled", 503, sender=False)
        self.settings: Settings = node.settings
        self.sqs = SqsApi(node.queues, self.settings)
        from gateway.aws.sns import SnsApi

        self.sns = SnsApi(node, self.settings)
        self._warned: set[str] = set()

    def authenticate(self, request: Request, body: bytes) -> Caller:
        """The caller, once its SigV4 signature checks out (dev mode: anyone)."""
        prefix = "/aws" if request.url.path.startswith("/aws") else ""
        base = f"{request.url.scheme}://{request.headers.get('host', 'localhost')}{prefix}"
        creds = self.settings.aws_credentials
        if not creds and not self.settings.auth_enabled:
            header = request.headers.get("authorization")
            key = sigv4.parse(header).access_key if header else "anonymous"
            if key not in self._warned and len(self._warned) < 1000:
                self._warned.add(key)
                log.warning(
                    "AWS API in DEV MODE: accepting access key %r without checking its "
                    "signature; set HERALD_AWS_CREDENTIALS to require valid credentials",
                    key,
                )
            return Caller(key, None, base)
        signed = sigv4.parse(request.headers.get("authorization"))
        cred = creds.get(signed.access_key)
        if cred is None:
            raise AwsError(
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
                403,
            )
        sigv4.verify(
            signed,
            cred.secret,
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=request.headers.items(),
            body=body,
        )
        return Caller(signed.access_key, cred, base)


async def _gateway(request: Request) -> AwsGateway:
    state = request.app.state
    gw: AwsGateway | None = getattr(state, "aws", None)
    if gw is None:
        gw = state.aws = AwsGateway(state.node)
    return gw


@router.post("/")
@router.post("/aws")
@router.post("/aws/")
async def aws(request: Request) -> Response:
    """Serve one SQS or SNS request."""
    body = await request.body()
    target = request.headers.get("x-amz-target")
    if target is not None:
        return await _sqs(request, target, body)
    return await _query(request, body)


@router.post("/{account:int}/{queue}")
@router.post("/aws/{account:int}/{queue}")
async def aws_queue_url(request: Request, account: int, queue: str) -> Response:
    """The query protocol's SQS requests, which older SDKs send to the queue's URL."""
    return await aws(request)


async def _sqs(request: Request, target: str, body: bytes) -> Response:
    try:
        service, _, action = target.partition(".")
        if service != "AmazonSQS":
            raise AwsError("UnknownOperationException", f"Unknown target {target!r}.")
        gw = await _gateway(request)
        caller = gw.authenticate(request, body)
        try:
            params: Any = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            raise AwsError("SerializationException", "The request body is not JSON.") from None
        if not isinstance(params, dict):
            raise AwsError("SerializationException", "The request body must be a JSON object.")
        result = await gw.sqs.handle(action, params, caller)
    except AwsError as exc:
        return sqs_error(exc)
    return Response(orjson.dumps(result), media_type="application/x-amz-json-1.0")


async def _query(request: Request, body: bytes) -> Response:
    namespace = SNS_NAMESPACE
    try:
        try:
            form = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=2000)
        except (UnicodeDecodeError, ValueError):
            raise AwsError("MalformedQueryString", "The request body is not a form.") from None
        params = dict(form)
        action = params.get("Action")
        if not action:
            raise AwsError("MissingAction", "The request must contain the parameter Action.")
        gw = await _gateway(request)
        if _is_sqs(request, action, gw):
            namespace = sqs_query.NAMESPACE
            return await _sqs_query(request, gw, action, params, body)
        if action not in gw.sns.actions:
            raise AwsError("InvalidAction", f"The action {action} is not valid for this endpoint.")
        caller = gw.authenticate(request, body)
        if action in ("Publish", "PublishBatch"):
            _charge_publish(request, caller, params)
        xml = await gw.sns.handle(action, params, caller)
    except AwsError as exc:
        return xml_error(exc, namespace)
    return Response(xml, media_type="text/xml")


def _charge_publish(request: Request, caller: Caller, params: dict[str, str]) -> None:
    """HTTP publish rate limit (HERALD_HTTP_PUBLISH_RATE), per access key: SNS's Throttled."""
    cost = sum(1 for k in params if k.startswith("PublishBatchRequestEntries.member.")
               and k.endswith(".Id")) or 1  # fmt: skip
    principal = Principal(sub=f"aws:{caller.access_key}")
    try:
        check_publish_rate(request, request.app.state.node, principal, cost)
    except RateLimited as exc:
        raise AwsError("Throttled", exc.message, 429) from None


def _is_sqs(request: Request, action: str, gw: AwsGateway) -> bool:
    """Whether a query-protocol request is for SQS: its signature's service says so;
    unsigned (dev mode), the action's name does (SNS wins where both have it)."""
    header = request.headers.get("authorization")
    if header:
        with contextlib.suppress(AwsError):
            return sigv4.parse(header).service == "sqs"
    return action in gw.sqs.actions and action not in gw.sns.actions


async def _sqs_query(
    request: Request, gw: AwsGateway, action: str, form: dict[str, str], body: bytes
) -> Response:
    try:
        caller = gw.authenticate(request, body)
        params = sqs_query.params_from_form(form)
        if "QueueUrl" not in params and request.path_params.get("queue"):
            params["QueueUrl"] = f"{caller.base_url}/{request.path_params['queue']}"
        result = await gw.sqs.handle(action, params, caller)
    except AwsError as exc:
        return xml_error(sqs_query.query_code(exc), sqs_query.NAMESPACE)
    return Response(sqs_query.render(action, result), media_type="text/xml")

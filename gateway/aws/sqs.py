"""The SQS actions over Herald's queues, in the JSON protocol's shapes (`sqs_query` maps
the query protocol onto them); messages and parameters are checked in `sqs_messages`.

Queues are the QueueService's own: a queue created here is the queue of
`/v1/queues`, and the reverse. How SQS concepts map onto Herald's store:

- Body: an SQS body is stored as a JSON string; a native body that is not a
  string is returned as its JSON text.
- MessageAttributes: stored as Herald attributes `{name: text}` (Binary as base64),
  with `AWS.DataTypes` holding the non-String DataTypes (see `sns_delivery`).
- Tags and the attributes Herald stores without acting on them (Policy,
  RedriveAllowPolicy, ReceiveMessageWaitTimeSeconds...) live in the queue's
  `tags` and `aws` maps.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from fanout.queues import QueueService
from fanout.queues.model import MAX_MESSAGE_BYTES
from gateway.aws.errors import AwsError, invalid, missing
from gateway.aws.md5 import md5_of_attributes, md5_of_body
from gateway.aws.sqs_messages import (
    MAX_BATCH_BYTES,
    Caller,
    batch_entries,
    check_receipt,
    failure,
    message_id,
    param_int,
    param_map,
    param_str,
    param_strings,
    prepare_send,
    typed_attributes,
    wanted,
)
from shared.config import Settings
from shared.errors import (
    HeraldError,
    PayloadTooLarge,
    QueueFull,
    QueueNotFound,
    ReceiptInvalid,
)

log = logging.getLogger("herald.aws")

MAX_RECEIVE = 10
# Cached queue attributes (content dedup, default wait) are this old at most, so a change
# made through another process is seen within this many seconds.
ATTRS_TTL_S = 2.0

# SQS attribute name -> (Herald attribute, lower bound, upper bound) for the numeric ones.
_NUMERIC = {
    "VisibilityTimeout": ("visibility_timeout", 0, 43_200),
    "MessageRetentionPeriod": ("retention", 60, 1_209_600),
    "DelaySeconds": ("delay", 0, 900),
    "MaximumMessageSize": ("max_message_bytes", 1_024, 1_048_576),
}
# Stored verbatim in the queue's `aws` map; ReceiveMessageWaitTimeSeconds is applied here.
_STORED = {
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "Policy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "DeduplicationScope",
    "FifoThroughputLimit",
}
_SETTABLE = {*_NUMERIC, *_STORED, "RedrivePolicy", "FifoQueue", "ContentBasedDeduplication"}
_READ_ONLY = {
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
}
_SYSTEM_ATTRIBUTES = {
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
}


def _herald_error(exc: HeraldError) -> AwsError:
    """A store error as SQS reports it."""
    if isinstance(exc, QueueNotFound):
        return AwsError("QueueDoesNotExist", "The specified queue does not exist.")
    if isinstance(exc, ReceiptInvalid):
        return AwsError("ReceiptHandleIsInvalid", f"The input receipt handle is invalid. {exc}")
    if isinstance(exc, PayloadTooLarge):
        return invalid(f"One or more parameters are invalid. Reason: {exc.message}")
    if isinstance(exc, QueueFull):
        return AwsError("RequestThrottled", exc.message, status=503, sender=False)
    if exc.status >= 500:
        return AwsError("ServiceUnavailable", exc.message, status=503, sender=False)
    return invalid(exc.message)


class SqsApi:
    """The SQS actions over one QueueService."""

    def __init__(self, queues: QueueService, settings: Settings) -> None:
        self.queues = queues
        self.region = settings.aws_region
        self.account = settings.aws_account_id
        self._attrs: dict[str, tuple[float, dict[str, Any]]] = {}
        self._tasks: dict[str, dict[str, Any]] = {}
        self.actions: dict[str, Callable[[dict[str, Any], Caller], Awaitable[dict[str, Any]]]] = {
            name[2:]: getattr(self, name) for name in dir(self) if name[:2] == "_A"
        }

    async def handle(self, action: str, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        handler = self.actions.get(action)
        if handler is None:
            raise AwsError("UnknownOperationException", f"Unknown operation {action}.", status=400)
        try:
            return await handler(params, caller)
        except HeraldError as exc:
            raise _herald_error(exc) from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # A parameter of a shape no check foresaw: the caller's fault, but worth a
            # log line, since a check is missing.
            log.warning("SQS %s: unexpected parameter shape: %r", action, exc)
            raise invalid("A parameter has an invalid shape.") from None

    # ---- names, URLs, ARNs ----------------------------------------------------------

    def arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{name}"

    def url(self, caller: Caller, name: str) -> str:
        return f"{caller.base_url}/{self.account}/{name}"

    def _queue(self, params: Mapping[str, Any], caller: Caller, key: str = "QueueUrl") -> str:
        url = param_str(params, key)
        assert url is not None
        name = url.rstrip("/").rsplit("/", 1)[-1]
        if not name:
            raise AwsError("QueueDoesNotExist", "The specified queue does not exist.")
        caller.check_queue(name)
        return name

    def _name_of_arn(self, arn: str) -> str:
        parts = arn.split(":")
        if len(parts) != 6 or parts[:3] != ["arn", "aws", "sqs"]:
            raise invalid(f"Invalid ARN {arn!r}.")
        return parts[5]

    async def _info(self, name: str, fresh: bool = False) -> dict[str, Any]:
        """Attributes and stats of a queue, cached for ATTRS_TTL_S unless `fresh`."""
        now = time.monotonic()
        cached = self._attrs.get(name)
        if cached is not None and not fresh and cached[0] > now:
            return cached[1]
        info = await self.queues.get(name)
        if len(self._attrs) > 10_000:
            self._attrs.clear()
        self._attrs[name] = (now + ATTRS_TTL_S, info)
        return info

    async def _names(self) -> list[str]:
        return [q["name"] for q in await self.queues.list_queues()]

    # ---- queue attributes -------------------------------------------------------------

    def _to_herald(
        self, name: str, attrs: Mapping[str, Any], stored: Mapping[str, str]
    ) -> dict[str, Any]:
        """SQS attributes as a Herald attribute patch."""
        patch: dict[str, Any] = {}
        aws = dict(stored)
        for key, value in attrs.items():
            if key not in _SETTABLE:
                raise AwsError("InvalidAttributeName", f"Unknown Attribute {key}.")
            if not isinstance(value, str):
                raise AwsError("InvalidAttributeValue", f"Invalid value for the parameter {key}.")
            if key in _NUMERIC:
                field, lo, hi = _NUMERIC[key]
                if not value.isdigit() or not lo <= int(value) <= hi:
                    raise AwsError(
                        "InvalidAttributeValue", f"Invalid value for the parameter {key}."
                    )
                patch[field] = int(value)
            elif key == "FifoQueue":
                if value.lower() not in ("true", "false") or (value.lower() == "true") != (
                    name.endswith(".fifo")
                ):
                    raise AwsError(
                        "InvalidAttributeValue",
                        "Invalid value for the parameter FifoQueue. Reason: "
                        "the name of a FIFO queue, and only of one, ends with .fifo.",
                    )
            elif key == "ContentBasedDeduplication":
                if value.lower() not in ("true", "false") or not name.endswith(".fifo"):
                    raise AwsError(
                        "InvalidAttributeName", "Unknown Attribute ContentBasedDeduplication."
                    )
                patch["content_dedup"] = value.lower() == "true"
            elif key == "RedrivePolicy":
                patch["dead_letter"] = self._redrive_in(value) if value else None
            elif key == "ReceiveMessageWaitTimeSeconds":
                if not value.isdigit() or int(value) > 20:
                    raise AwsError(
                        "InvalidAttributeValue", f"Invalid value for the parameter {key}."
                    )
                aws[key] = str(int(value))
            else:
                aws[key] = value
        patch["aws"] = aws
        return patch

    def _redrive_in(self, value: str) -> dict[str, Any]:
        try:
            policy = orjson.loads(value)
            arn = policy["deadLetterTargetArn"]
            count = int(policy["maxReceiveCount"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise AwsError(
                "InvalidAttributeValue",
                "Value for parameter RedrivePolicy is invalid. Reason: Redrive policy is not "
                "a JSON object with deadLetterTargetArn and maxReceiveCount.",
            ) from None
        if not isinstance(arn, str) or not 1 <= count <= 1000:
            raise AwsError(
                "InvalidAttributeValue",
                "Value for parameter RedrivePolicy is invalid. Reason: "
                "maxReceiveCount must be from 1 to 1000.",
            )
        return {"queue": self._name_of_arn(arn), "max_receive_count": count}

    def _from_herald(self, info: Mapping[str, Any]) -> dict[str, str]:
        """A Herald queue (attributes and stats) as SQS attributes."""
        created = str(int(info["created_at"]) // 1000)
        out = {
            "QueueArn": self.arn(info["name"]),
            "ApproximateNumberOfMessages": str(info.get("visible", 0)),
            "ApproximateNumberOfMessagesNotVisible": str(info.get("in_flight", 0)),
            "ApproximateNumberOfMessagesDelayed": str(info.get("delayed", 0)),
            "CreatedTimestamp": created,
            "LastModifiedTimestamp": created,
            "VisibilityTimeout": str(int(info["visibility_timeout"])),
            "MaximumMessageSize": str(info["max_message_bytes"]),
            "MessageRetentionPeriod": str(int(info["retention"])),
            "DelaySeconds": str(int(info["delay"])),
            "ReceiveMessageWaitTimeSeconds": "0",
            "SqsManagedSseEnabled": "false",
        }
        dl = info.get("dead_letter")
        if dl:
            out["RedrivePolicy"] = orjson.dumps(
                {
                    "deadLetterTargetArn": self.arn(dl["queue"]),
                    "maxReceiveCount": dl["max_receive_count"],
                }
            ).decode()
        if info.get("fifo"):
            out["FifoQueue"] = "true"
            out["ContentBasedDeduplication"] = "true" if info.get("content_dedup") else "false"
            out["DeduplicationScope"] = "queue"
            out["FifoThroughputLimit"] = "perQueue"
        out.update(info.get("aws") or {})
        return out

    # ---- queue actions ---------------------------------------------------------------

    async def _ACreateQueue(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = param_str(params, "QueueName")
        assert name is not None
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}(\.fifo)?", name) or len(name) > 80:
            raise invalid(
                "Can only include alphanumeric characters, hyphens, or underscores. "
                "1 to 80 in length"
            )
        caller.check_queue(name)
        attrs = param_map(params, "Attributes")
        tags = param_map(params, "tags")
        if attrs.get("FifoQueue", "false").lower() == "true" and not name.endswith(".fifo"):
            raise invalid(
                "The name of a FIFO queue can only include alphanumeric characters, "
                "hyphens, or underscores, must end with .fifo suffix."
            )
        existing: dict[str, Any] | None
        try:
            existing = await self.queues.get(name)
        except QueueNotFound:
            existing = None
        patch = self._to_herald(name, attrs, {})
        # SQS raised its limit and default to 1 MiB (2025); Herald's native default is lower.
        patch.setdefault("max_message_bytes", MAX_MESSAGE_BYTES)
        if existing is not None:
            # Same name, same given attributes: AWS answers the URL; else QueueNameExists.
            current = self._from_herald(existing)
            for key, value in attrs.items():
                if key == "RedrivePolicy":
                    have = existing.get("dead_letter")
                    if (self._redrive_in(value) if value else None) != have:
                        raise _exists()
                elif current.get(key, "").lower() != value.lower():
                    raise _exists()
            return {"QueueUrl": self.url(caller, name)}
        if tags:
            patch["tags"] = {str(k): str(v) for k, v in tags.items()}
        await self.queues.create_or_update(name, patch)
        self._attrs.pop(name, None)
        return {"QueueUrl": self.url(caller, name)}

    async def _AGetQueueUrl(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = param_str(params, "QueueName")
        assert name is not None
        caller.check_queue(name)
        await self.queues.get(name)
        return {"QueueUrl": self.url(caller, name)}

    async def _AListQueues(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        prefix = param_str(params, "QueueNamePrefix", required=False) or ""
        limit = param_int(params, "MaxResults", 1, 1000)
        token = param_str(params, "NextToken", required=False)
        if token is not None and limit is None:
            raise invalid("MaxResults is required with NextToken.")
        after = ""
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise invalid("Invalid NextToken.") from None
        names = sorted(
            n
            for n in await self._names()
            if n.startswith(prefix) and n > after and caller.may_use_queue(n)
        )
        out: dict[str, Any] = {}
        page = names[: limit or 1000]
        if page:
            out["QueueUrls"] = [self.url(caller, n) for n in page]
        if limit is not None and len(names) > limit:
            out["NextToken"] = base64.urlsafe_b64encode(page[-1].encode()).decode()
        return out

    async def _ADeleteQueue(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        await self.queues.get(name)  # AWS answers QueueDoesNotExist for a missing queue
        await self.queues.delete(name)
        self._attrs.pop(name, None)
        return {}

    async def _APurgeQueue(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        await self.queues.purge(name)
        return {}

    async def _AGetQueueAttributes(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        wanted = param_strings(params, "AttributeNames")
        for key in wanted:
            if key != "All" and key not in _SETTABLE | _READ_ONLY:
                raise AwsError("InvalidAttributeName", f"Unknown Attribute {key}.")
        attrs = self._from_herald(await self._info(name, fresh=True))
        if "All" not in wanted:
            attrs = {k: v for k, v in attrs.items() if k in wanted}
        return {"Attributes": attrs} if attrs else {}

    async def _ASetQueueAttributes(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        info = await self.queues.get(name)
        attrs = param_map(params, "Attributes")
        if "FifoQueue" in attrs:
            raise AwsError("InvalidAttributeName", "Unknown Attribute FifoQueue.")
        await self.queues.create_or_update(
            name, self._to_herald(name, attrs, info.get("aws") or {})
        )
        self._attrs.pop(name, None)
        return {}

    async def _ATagQueue(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        tags = {**((await self.queues.get(name)).get("tags") or {})}
        tags.update({str(k): str(v) for k, v in param_map(params, "Tags").items()})
        await self.queues.create_or_update(name, {"tags": tags})
        return {}

    async def _AUntagQueue(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        tags = {**((await self.queues.get(name)).get("tags") or {})}
        for key in param_strings(params, "TagKeys"):
            tags.pop(key, None)
        await self.queues.create_or_update(name, {"tags": tags})
        return {}

    async def _AListQueueTags(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        return {"Tags": (await self.queues.get(name)).get("tags") or {}}

    async def _AAddPermission(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        label = param_str(params, "Label")
        accounts = param_strings(params, "AWSAccountIds")
        actions = param_strings(params, "Actions")
        if not accounts or not actions:
            raise missing("AWSAccountIds" if not accounts else "Actions")
        info = await self.queues.get(name)
        aws = dict(info.get("aws") or {})
        policy = orjson.loads(aws.get("Policy") or '{"Version":"2012-10-17","Statement":[]}')
        statements = policy.setdefault("Statement", [])
        if any(s.get("Sid") == label for s in statements):
            raise invalid(f"Value {label} for parameter Label is invalid. Reason: Already exists.")
        statements.append(
            {
                "Sid": label,
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in accounts]},
                "Action": [f"SQS:{a}" for a in actions],
                "Resource": self.arn(name),
            }
        )
        aws["Policy"] = orjson.dumps(policy).decode()
        await self.queues.create_or_update(name, {"aws": aws})
        return {}

    async def _ARemovePermission(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        label = param_str(params, "Label")
        info = await self.queues.get(name)
        aws = dict(info.get("aws") or {})
        policy = orjson.loads(aws.get("Policy") or "{}")
        statements = [s for s in policy.get("Statement", []) if s.get("Sid") != label]
        if len(statements) == len(policy.get("Statement", [])):
            raise invalid(
                f"Value {label} for parameter Label is invalid. Reason: can't find label."
            )
        if statements:
            policy["Statement"] = statements
            aws["Policy"] = orjson.dumps(policy).decode()
        else:
            aws.pop("Policy", None)
        await self.queues.create_or_update(name, {"aws": aws})
        return {}

    # ---- messages --------------------------------------------------------------------

    async def _ASendMessage(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        entry, digests = prepare_send(name, await self._info(name), params)
        result = await self.queues.send(name, entry)
        return {"MessageId": message_id(result["id"]), **digests}

    async def _ASendMessageBatch(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        entries = batch_entries(params)
        total = sum(len(str(e.get("MessageBody", "")).encode()) for e in entries)
        if total > MAX_BATCH_BYTES:
            raise AwsError(
                "BatchRequestTooLong",
                f"Batch requests cannot be longer than {MAX_BATCH_BYTES} bytes.",
            )
        info = await self._info(name)
        failed: list[dict[str, Any]] = []
        valid: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        for e in entries:
            try:
                entry, digests = prepare_send(name, info, e)
            except AwsError as exc:
                failed.append(failure(e["Id"], exc.code, exc.message))
            else:
                valid.append((e["Id"], entry, digests))
        successful: list[dict[str, Any]] = []
        if valid:
            results = await self.queues.send_batch(name, [v[1] for v in valid])
            for (entry_id, _, digests), res in zip(valid, results, strict=True):
                if "error" in res:
                    failed.append(
                        failure(entry_id, "InvalidParameterValue", res["error"]["message"])
                    )
                else:
                    successful.append(
                        {"Id": entry_id, "MessageId": message_id(res["id"]), **digests}
                    )
        return {"Successful": successful, "Failed": failed}

    async def _AReceiveMessage(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        count = param_int(params, "MaxNumberOfMessages", 1, MAX_RECEIVE) or 1
        wait = param_int(params, "WaitTimeSeconds", 0, 20)
        vt = param_int(params, "VisibilityTimeout", 0, 43_200)
        if wait is None:
            aws = (await self._info(name)).get("aws") or {}
            wait = int(aws.get("ReceiveMessageWaitTimeSeconds", "0"))
        attr_names = set(param_strings(params, "MessageAttributeNames"))
        system = set(param_strings(params, "AttributeNames")) | set(
            param_strings(params, "MessageSystemAttributeNames")
        )
        msgs = await self.queues.receive(name, max=count, wait=wait, visibility_timeout=vt)
        out = [self._received(m, attr_names, system, caller) for m in msgs]
        return {"Messages": out} if out else {}

    def _received(
        self, m: Mapping[str, Any], attr_names: set[str], system: set[str], caller: Caller
    ) -> dict[str, Any]:
        body = m["body"] if isinstance(m["body"], str) else orjson.dumps(m["body"]).decode()
        msg: dict[str, Any] = {
            "MessageId": message_id(m["id"]),
            "ReceiptHandle": m["receipt"],
            "MD5OfBody": md5_of_body(body),
            "Body": body,
        }
        every = "All" in system
        sys_attrs = {
            "SenderId": self.account,
            "SentTimestamp": str(m["sent_at"]),
            "ApproximateReceiveCount": str(m["receive_count"]),
            "ApproximateFirstReceiveTimestamp": str(m["first_received_at"]),
        }
        chosen = {k: v for k, v in sys_attrs.items() if every or k in system}
        if chosen:
            msg["Attributes"] = chosen
        if attr_names:
            typed = typed_attributes(m.get("attributes") or {})
            picked = {k: v for k, v in typed.items() if wanted(k, attr_names)}
            if picked:
                msg["MD5OfMessageAttributes"] = md5_of_attributes(
                    {
                        k: (kind, base64.b64decode(value) if kind.startswith("Binary") else value)
                        for k, (kind, value) in picked.items()
                    }
                )
                msg["MessageAttributes"] = {
                    k: (
                        {"BinaryValue": value, "DataType": kind}
                        if kind.startswith("Binary")
                        else {"StringValue": value, "DataType": kind}
                    )
                    for k, (kind, value) in picked.items()
                }
        return msg

    async def _ADeleteMessage(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        receipt = check_receipt(params.get("ReceiptHandle"))
        # A stale but well-formed handle deletes nothing and succeeds, as on AWS.
        await self.queues.ack(name, [receipt])
        return {}

    async def _ADeleteMessageBatch(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = self._queue(params, caller)
        entries = batch_entries(params)
        successful: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        good: list[tuple[str, str]] = []
        for e in entries:
            try:
                good.append((e["Id"], check_receipt(e.get("ReceiptHandle"))))
            except AwsError as exc:
                failed.append(failure(e["Id"], exc.code, exc.message))
        if good:
            await self.queues.ack(name, [r for _, r in good])
            successful = [{"Id": i} for i, _ in good]
        return {"Successful": successful, "Failed": failed}

    async def _change_visibility(self, name: str, receipt: object, seconds: object) -> None:
        handle = check_receipt(receipt)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= 43_200:
            raise invalid(
                f"Value {seconds} for parameter VisibilityTimeout is invalid. "
                "Reason: must be between 0 and 43200."
            )
        try:
            await self.queues.change_visibility(name, handle, seconds)
        except ReceiptInvalid:
            raise invalid(
                f"Value {handle} for parameter ReceiptHandle is invalid. Reason: Message does "
                "not exist or is not available for visibility timeout change."
            ) from None

    async def _AChangeMessageVisibility(
        self, params: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        name = self._queue(params, caller)
        if "VisibilityTimeout" not in params:
            raise missing("VisibilityTimeout")
        await self._change_visibility(
            name, params.get("ReceiptHandle"), params["VisibilityTimeout"]
        )
        return {}

    async def _AChangeMessageVisibilityBatch(
        self, params: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        name = self._queue(params, caller)
        successful: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for e in batch_entries(params):
            try:
                await self._change_visibility(
                    name, e.get("ReceiptHandle"), e.get("VisibilityTimeout")
                )
            except AwsError as exc:
                failed.append(failure(e["Id"], exc.code, exc.message))
            else:
                successful.append({"Id": e["Id"]})
        return {"Successful": successful, "Failed": failed}

    # ---- dead-letter queues and redrive ----------------------------------------------

    async def _AListDeadLetterSourceQueues(
        self, params: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        name = self._queue(params, caller)
        await self.queues.get(name)
        sources = sorted(
            q["name"]
            for q in await self.queues.list_queues()
            if (q.get("dead_letter") or {}).get("queue") == name and caller.may_use_queue(q["name"])
        )
        return {"queueUrls": [self.url(caller, n) for n in sources]}

    async def _AStartMessageMoveTask(
        self, params: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        source_arn = param_str(params, "SourceArn")
        assert source_arn is not None
        dlq = self._name_of_arn(source_arn)
        caller.check_queue(dlq)
        if params.get("DestinationArn"):
            raise AwsError(
                "UnsupportedOperation",
                "Herald moves messages back to their source queues only: omit DestinationArn.",
            )
        await self.queues.get(dlq)
        started = int(time.time() * 1000)
        moved = await self.queues.redrive(dlq)
        handle = base64.urlsafe_b64encode(
            orjson.dumps({"task": uuid.uuid4().hex, "source": source_arn})
        ).decode()
        # Herald's redrive runs to completion inside this call, so the task is done.
        self._tasks[handle] = {
            "TaskHandle": handle,
            "Status": "COMPLETED",
            "SourceArn": source_arn,
            "ApproximateNumberOfMessagesMoved": moved,
            "ApproximateNumberOfMessagesToMove": moved,
            "StartedTimestamp": started,
        }
        if len(self._tasks) > 1000:
            self._tasks.pop(next(iter(self._tasks)))
        return {"TaskHandle": handle}

    async def _AListMessageMoveTasks(
        self, params: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        source_arn = param_str(params, "SourceArn")
        assert source_arn is not None
        caller.check_queue(self._name_of_arn(source_arn))
        limit = param_int(params, "MaxResults", 1, 10) or 1
        tasks = [
            {k: v for k, v in t.items() if k != "TaskHandle"}
            for t in reversed(self._tasks.values())
            if t["SourceArn"] == source_arn
        ]
        return {"Results": tasks[:limit]}

    async def _ACancelMessageMoveTask(
        self, params: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        handle = param_str(params, "TaskHandle")
        task = self._tasks.get(handle or "")
        if task is None:
            raise AwsError(
                "ResourceNotFoundException",
                "The resource that you specified for the TaskHandle parameter doesn't exist.",
            )
        raise AwsError(
            "FailedPrecondition" if task["Status"] == "COMPLETED" else "UnsupportedOperation",
            "Only a running task can be cancelled; Herald's moves complete at once.",
        )


def _exists() -> AwsError:
    return AwsError(
        "QueueNameExists",
        "A queue already exists with the same name and a different value for attribute(s).",
    )

"""SQS in the query protocol (form `Action=…`, XML answers), for SDKs older than the
JSON protocol: the form is turned into the JSON protocol's parameters, the answer of
`SqsApi` into the query protocol's XML."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

from gateway.aws.errors import SQS_QUERY_CODES, AwsError, invalid, request_id

NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"

_INTEGERS = {
    "DelaySeconds",
    "MaxNumberOfMessages",
    "WaitTimeSeconds",
    "VisibilityTimeout",
    "MaxResults",
    "MaxNumberOfMessagesPerSecond",
}
# Form list name -> JSON list name.
_LISTS = {
    "AttributeName": "AttributeNames",
    "MessageAttributeName": "MessageAttributeNames",
    "MessageSystemAttributeName": "MessageSystemAttributeNames",
    "TagKey": "TagKeys",
    "AWSAccountId": "AWSAccountIds",
    "ActionName": "Actions",
}
_BATCHES = {
    "SendMessageBatchRequestEntry",
    "DeleteMessageBatchRequestEntry",
    "ChangeMessageVisibilityBatchRequestEntry",
}
# Actions whose answer holds only the request id, as on AWS.
_NO_RESULT = {
    "DeleteQueue",
    "PurgeQueue",
    "SetQueueAttributes",
    "TagQueue",
    "UntagQueue",
    "AddPermission",
    "RemovePermission",
    "DeleteMessage",
    "ChangeMessageVisibility",
}
_INDEXED = re.compile(r"([A-Za-z]+)\.(\d{1,4})(?:\.(.+))?")


def _scalar(key: str, value: str) -> Any:
    if key in _INTEGERS:
        try:
            return int(value)
        except ValueError:
            raise invalid(f"Value {value} for parameter {key} is invalid.") from None
    return value


def _message_attributes(groups: Mapping[int, Mapping[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fields in groups.values():
        name = fields.get("Name")
        if name is None:
            raise invalid("MessageAttribute entries need a Name.")
        out[name] = {
            k.removeprefix("Value."): v for k, v in fields.items() if k.startswith("Value.")
        }
    return out


def params_from_form(form: Mapping[str, str]) -> dict[str, Any]:
    """The JSON protocol's parameters of a query-protocol form."""
    params: dict[str, Any] = {}
    indexed: dict[str, dict[int, dict[str, str]]] = {}
    for key, value in form.items():
        if key in ("Action", "Version"):
            continue
        m = _INDEXED.fullmatch(key)
        if m is None:
            params[key] = _scalar(key, value)
            continue
        group, n, rest = m.group(1), int(m.group(2)), m.group(3) or ""
        indexed.setdefault(group, {}).setdefault(n, {})[rest] = value
    for group, members in indexed.items():
        ordered = dict(sorted(members.items()))
        if group in _LISTS:
            params[_LISTS[group]] = [f.get("", "") for f in ordered.values()]
        elif group == "Attribute":
            params["Attributes"] = {f.get("Name", ""): f.get("Value", "") for f in ordered.values()}
        elif group == "Tag":
            params["Tags"] = params["tags"] = {
                f.get("Key", ""): f.get("Value", "") for f in ordered.values()
            }
        elif group == "MessageAttribute":
            params["MessageAttributes"] = _message_attributes(ordered)
        elif group in _BATCHES:
            params["Entries"] = [_entry(f) for f in ordered.values()]
        else:
            raise invalid(f"Unknown parameter {group}.")
    return params


def _entry(fields: Mapping[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    attributes: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        m = _INDEXED.fullmatch(key)
        if m is not None and m.group(1) == "MessageAttribute":
            attributes.setdefault(int(m.group(2)), {})[m.group(3) or ""] = value
        else:
            entry[key] = _scalar(key, value)
    if attributes:
        entry["MessageAttributes"] = _message_attributes(dict(sorted(attributes.items())))
    return entry


def _el(name: str, value: Any) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(str(value))}</{name}>"


def _attributes(attrs: Mapping[str, str], element: str = "Attribute") -> str:
    return "".join(
        f"<{element}>{_el('Name', k)}{_el('Value', v)}</{element}>" for k, v in attrs.items()
    )


def _message(m: Mapping[str, Any]) -> str:
    parts = [_el(k, m[k]) for k in ("MessageId", "ReceiptHandle", "MD5OfBody", "Body")]
    parts.append(_attributes(m.get("Attributes") or {}))
    if "MD5OfMessageAttributes" in m:
        parts.append(_el("MD5OfMessageAttributes", m["MD5OfMessageAttributes"]))
    for name, value in (m.get("MessageAttributes") or {}).items():
        inner = "".join(_el(k, v) for k, v in value.items())
        parts.append(
            f"<MessageAttribute>{_el('Name', name)}<Value>{inner}</Value></MessageAttribute>"
        )
    return f"<Message>{''.join(parts)}</Message>"


def _batch(action: str, result: Mapping[str, Any]) -> str:
    ok = "".join(
        f"<{action}ResultEntry>{''.join(_el(k, v) for k, v in e.items())}</{action}ResultEntry>"
        for e in result.get("Successful", [])
    )
    failed = "".join(
        f"<BatchResultErrorEntry>{''.join(_el(k, v) for k, v in e.items())}</BatchResultErrorEntry>"
        for e in result.get("Failed", [])
    )
    return ok + failed


def render(action: str, result: Mapping[str, Any]) -> str:
    """The query protocol's XML answer for a JSON-protocol result."""
    if action == "ReceiveMessage":
        body = "".join(_message(m) for m in result.get("Messages", []))
    elif action in ("GetQueueAttributes",):
        body = _attributes(result.get("Attributes") or {})
    elif action == "ListQueueTags":
        body = "".join(
            f"<Tag>{_el('Key', k)}{_el('Value', v)}</Tag>"
            for k, v in (result.get("Tags") or {}).items()
        )
    elif action in ("ListQueues", "ListDeadLetterSourceQueues"):
        urls = result.get("QueueUrls") or result.get("queueUrls") or []
        body = "".join(_el("QueueUrl", u) for u in urls)
        if "NextToken" in result:
            body += _el("NextToken", result["NextToken"])
    elif action.endswith("Batch"):
        body = _batch(action, result)
    elif action == "ListMessageMoveTasks":
        body = "".join(
            f"<ListMessageMoveTasksResultEntry>{''.join(_el(k, v) for k, v in t.items())}"
            "</ListMessageMoveTasksResultEntry>"
            for t in result.get("Results", [])
        )
    else:
        body = "".join(_el(k, v) for k, v in result.items())
    wrapped = "" if action in _NO_RESULT else f"<{action}Result>{body}</{action}Result>"
    return (
        f'<{action}Response xmlns="{NAMESPACE}">{wrapped}'
        f"<ResponseMetadata><RequestId>{request_id()}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    )


def query_code(exc: AwsError) -> AwsError:
    """The error as the query protocol names it (AWS.SimpleQueueService.NonExistentQueue)."""
    return AwsError(
        SQS_QUERY_CODES.get(exc.code, exc.code), exc.message, exc.status, sender=exc.sender
    )

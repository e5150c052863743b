"""SNS in the query protocol (form `Action=`, XML answers) over Herald topics.

An SNS topic is a Herald topic of the same name: Publish is a Herald publish, so
WebSocket subscribers see it live, and an `sqs` subscription is a topic→queue
subscription whose `options` make it deliver SNS envelopes (`sns_delivery`).
CreateTopic records the topic in the queue store's registry, for ListTopics.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import orjson

from fanout.queues import QueueService
from fanout.queues.sns_delivery import SNS_META, flatten, number_text
from gateway.aws.errors import AwsError, request_id
from gateway.aws.sqs_messages import Caller
from shared.auth import Principal
from shared.config import Settings
from shared.errors import HeraldError, InvalidFilter, QueueNotFound
from shared.filters import compile_filter

if TYPE_CHECKING:
    from fanout.node import Node

NAMESPACE = "http://sns.amazonaws.com/doc/2010-03-31/"
MAX_BATCH = 10
PAGE = 100
_TOPIC_NAME = re.compile(r"[A-Za-z0-9_-]{1,256}")
# Confirmation POSTs in flight (held so they are not garbage-collected mid-way).
_background: set[asyncio.Task[None]] = set()
_SUB_ATTRIBUTES = {
    "FilterPolicy",
    "FilterPolicyScope",
    "RawMessageDelivery",
    "DeliveryPolicy",
    "RedrivePolicy",
}
_INT = re.compile(r"-?[0-9]{1,15}")
# Topic attributes SNS defines; stored as given (docs/aws.md), so the set and the size
# are bounded: an unknown name is refused rather than growing the registry.
_TOPIC_ATTRIBUTES = {
    "DisplayName",
    "Policy",
    "DeliveryPolicy",
    "KmsMasterKeyId",
    "SignatureVersion",
    "TracingConfig",
    "FifoTopic",
    "ContentBasedDeduplication",
    "ArchivePolicy",
    "FifoThroughputScope",
    "DataProtectionPolicy",
}
MAX_ATTRIBUTE_VALUE = 30 * 1024
MAX_TAGS = 50

Handler = Callable[[dict[str, str], Caller], Awaitable[Any]]


def _param(params: Mapping[str, str], key: str) -> str:
    value = params.get(key)
    if value is None or value == "":
        raise AwsError("InvalidParameter", f"Invalid parameter: {key}")
    return value


def _entries(params: Mapping[str, str], prefix: str, key: str, value: str) -> dict[str, str]:
    """`Prefix.entry.N.key/value` (or `.member.N.Key/Value`) pairs as a map."""
    out: dict[str, str] = {}
    n = 1
    while f"{prefix}.{n}.{key}" in params:
        out[params[f"{prefix}.{n}.{key}"]] = params.get(f"{prefix}.{n}.{value}", "")
        n += 1
    return out


def _members(params: Mapping[str, str], prefix: str) -> list[dict[str, str]]:
    """`Prefix.member.N.Field` groups, in order of N (one pass over the form)."""
    head = f"{prefix}.member."
    groups: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        if key.startswith(head):
            n, _, field = key[len(head) :].partition(".")
            if n.isdigit() and field:
                groups.setdefault(int(n), {})[field] = value
    return [groups[n] for n in sorted(groups)]


def _check_topic_attribute(key: str, value: str) -> None:
    if key not in _TOPIC_ATTRIBUTES:
        raise AwsError("InvalidParameter", f"Invalid parameter: AttributeName: {key}")
    if len(value) > MAX_ATTRIBUTE_VALUE:
        raise AwsError("InvalidParameter", f"Invalid parameter: {key}: too long")


def _xml(value: Any) -> str:
    """Dicts become elements; lists become `<member>`s; `Entries` maps become `<entry>`s."""
    if isinstance(value, Entries):
        return "".join(
            f"<entry><key>{escape(k)}</key><value>{escape(v)}</value></entry>"
            for k, v in value.items()
        )
    if isinstance(value, dict):
        return "".join(f"<{k}>{_xml(v)}</{k}>" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return "".join(f"<member>{_xml(v)}</member>" for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


class Entries(dict[str, str]):
    """An attribute map, rendered as SNS renders one."""


def _response(action: str, result: Mapping[str, Any] | None) -> str:
    body = f"<{action}Result>{_xml(dict(result))}</{action}Result>" if result is not None else ""
    return (
        f'<{action}Response xmlns="{NAMESPACE}">{body}<ResponseMetadata><RequestId>'
        f"{request_id()}</RequestId></ResponseMetadata></{action}Response>"
    )


def _attributes_in(params: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """SNS MessageAttributes as Herald attributes (numbers as numbers) plus their meta."""
    n = 1
    attrs: dict[str, Any] = {}
    types: dict[str, str] = {}
    numbers: dict[str, str] = {}
    while f"{prefix}.entry.{n}.Name" in params:
        head = f"{prefix}.entry.{n}."
        name = params[head + "Name"]
        kind = params.get(head + "Value.DataType", "")
        text = params.get(head + "Value.StringValue")
        n += 1
        if not name or len(name) > 256 or name.lower().startswith(("aws.", "amazon.")):
            raise AwsError("InvalidParameterValue", f"The message attribute '{name}' is invalid.")
        if kind.startswith("Binary"):
            blob = params.get(head + "Value.BinaryValue", "")
            try:
                base64.b64decode(blob, validate=True)
            except binascii.Error:
                raise AwsError(
                    "InvalidParameterValue", f"The message attribute '{name}' has invalid Binary."
                ) from None
            attrs[name], types[name] = blob, kind
            continue
        if text is None:
            raise AwsError(
                "ParameterValueInvalid",
                f"The message attribute '{name}' must contain non-empty message attribute value "
                f"for message attribute type '{kind}'.",
            )
        if kind.startswith("Number"):
            try:
                value: int | float = int(text) if _INT.fullmatch(text) else float(text)
            except ValueError:
                raise AwsError(
                    "ParameterValueInvalid",
                    f"Could not cast message attribute '{name}' value to number.",
                ) from None
            if value != value or value in (float("inf"), float("-inf")):
                raise AwsError(
                    "ParameterValueInvalid", f"Message attribute '{name}' is not a finite number."
                )
            attrs[name] = value
            if number_text(value) != text:
                numbers[name] = text
            if kind != "Number":
                types[name] = kind
        elif kind.startswith("String"):
            if kind == "String.Array":
                try:
                    ok = isinstance(orjson.loads(text), list)
                except orjson.JSONDecodeError:
                    ok = False
                if not ok:
                    raise AwsError(
                        "ParameterValueInvalid",
                        f"The message attribute '{name}' with type 'String.Array' has an "
                        "invalid value: not a JSON array.",
                    )
            attrs[name] = text
            if kind != "String":
                types[name] = kind
        else:
            raise AwsError(
                "ParameterValueInvalid",
                f"The message attribute '{name}' has an invalid message attribute type, the set "
                "of supported type prefixes is Binary, Number, and String.",
            )
    meta: dict[str, Any] = {}
    if types:
        meta["Types"] = types
    if numbers:
        meta["Numbers"] = numbers
    return {"attrs": attrs, "meta": meta}


class SnsApi:
    """The SNS actions over a node's topics and queue subscriptions."""

    def __init__(self, node: Node, settings: Settings) -> None:
        assert node.queues is not None
        self.node = node
        self.queues: QueueService = node.queues
        self.region = settings.aws_region
        self.account = settings.aws_account_id
        self.actions: dict[str, Handler] = {
            name[2:]: getattr(self, name) for name in dir(self) if name[:2] == "_A"
        }

    async def handle(self, action: str, params: dict[str, str], caller: Caller) -> str:
        try:
            result = await self.actions[action](params, caller)
        except InvalidFilter as exc:
            raise AwsError("InvalidParameter", f"Invalid parameter: FilterPolicy: {exc}") from None
        except QueueNotFound:
            raise AwsError(
                "InvalidParameter", "Invalid parameter: Endpoint: the queue does not exist"
            ) from None
        except HeraldError as exc:
            if exc.status >= 500:
                raise AwsError("InternalError", exc.message, 500, sender=False) from None
            raise AwsError("InvalidParameter", f"Invalid parameter: {exc.message}") from None
        return _response(action, result)

    # ---- names ----------------------------------------------------------------------

    def topic_arn(self, name: str) -> str:
        return f"arn:aws:sns:{self.region}:{self.account}:{name}"

    def _topic_name(self, arn: str, caller: Caller) -> str:
        parts = arn.split(":")
        if len(parts) != 6 or parts[:3] != ["arn", "aws", "sns"] or not parts[5]:
            raise AwsError("InvalidParameter", "Invalid parameter: TopicArn")
        name = parts[5]
        if caller.credential is not None and not any(
            fnmatch.fnmatchcase(name, p) for p in caller.credential.topics
        ):
            raise AwsError("AuthorizationError", f"Not authorized to use topic {name}.", 403)
        return name

    async def _existing_topic(self, arn: str, caller: Caller) -> tuple[str, dict[str, Any]]:
        name = self._topic_name(arn, caller)
        topics = await self.queues.sns_topics()
        if name not in topics:
            raise AwsError("NotFound", "Topic does not exist", 404)
        return name, topics[name]

    def _sub_arn(self, topic_arn: str, sub_id: str) -> str:
        return f"{topic_arn}:{sub_id}"

    def _sub_options(
        self, arn: str, sub_id: str, endpoint: str, attrs: dict[str, str], base: str, **extra: str
    ) -> dict[str, Any]:
        """The SNS side of a Herald subscription, kept in its `options`."""
        sub_arn = self._sub_arn(arn, sub_id)
        return {
            "attributes": attrs,
            "topic_arn": arn,
            "subscription_arn": sub_arn,
            "endpoint": endpoint,
            **extra,
            "unsubscribe_url": f"{base}/?Action=Unsubscribe&SubscriptionArn={sub_arn}",
        }

    async def _sns_subs(self) -> list[dict[str, Any]]:
        return [s for s in await self.queues.list_subscriptions() if s.get("options") is not None]

    async def _sub(self, arn: str, caller: Caller) -> dict[str, Any]:
        for sub in await self._sns_subs():
            if sub["options"].get("subscription_arn") == arn:
                self._topic_name(sub["options"]["topic_arn"], caller)
                return sub
        raise AwsError("NotFound", "Subscription does not exist", 404)

    # ---- topics ---------------------------------------------------------------------

    async def _ACreateTopic(self, params: dict[str, str], caller: Caller) -> dict[str, Any]:
        name = _param(params, "Name")
        base = name[:-5] if name.endswith(".fifo") else name
        if _TOPIC_NAME.fullmatch(base) is None:
            raise AwsError(
                "InvalidParameter",
                "Invalid parameter: Topic Name: only alphanumerics, hyphens and underscores, "
                "1 to 256 characters (plus .fifo)",
            )
        arn = self.topic_arn(name)
        self._topic_name(arn, caller)
        attrs = _entries(params, "Attributes.entry", "key", "value")
        for key, value in attrs.items():
            _check_topic_attribute(key, value)
        fifo = attrs.get("FifoTopic", "false").lower() == "true"
        if fifo != name.endswith(".fifo"):
            raise AwsError(
                "InvalidParameter",
                "Invalid parameter: Fifo Topic names must end with .fifo and Standard Topic "
                "names must not",
            )
        tags = _entries(params, "Tags.member", "Key", "Value")
        if len(tags) > MAX_TAGS or any(len(k) > 128 or len(v) > 256 for k, v in tags.items()):
            raise AwsError("InvalidParameter", "Invalid parameter: Tags")
        topics = await self.queues.sns_topics()
        if name not in topics:
            await self.queues.put_sns_topic(name, {"attributes": attrs, "tags": tags})
        return {"TopicArn": arn}

    async def _ADeleteTopic(self, params: dict[str, str], caller: Caller) -> None:
        arn = _param(params, "TopicArn")
        name = self._topic_name(arn, caller)
        await self.queues.delete_sns_topic(name)
        for sub in await self._sns_subs():
            if sub["options"].get("topic_arn") == arn:
                await self.queues.delete_subscription(sub["id"])

    async def _AListTopics(self, params: dict[str, str], caller: Caller) -> dict[str, Any]:
        after = params.get("NextToken", "")
        names = sorted(n for n in await self.queues.sns_topics() if n > after)
        if caller.credential is not None:
            names = [
                n for n in names if any(fnmatch.fnmatchcase(n, p) for p in caller.credential.topics)
            ]
        page = names[:PAGE]
        out: dict[str, Any] = {"Topics": [{"TopicArn": self.topic_arn(n)} for n in page]}
        if len(names) > PAGE:
            out["NextToken"] = page[-1]
        return out

    async def _AGetTopicAttributes(self, params: dict[str, str], caller: Caller) -> dict[str, Any]:
        arn = _param(params, "TopicArn")
        _, topic = await self._existing_topic(arn, caller)
        subs = [s for s in await self._sns_subs() if s["options"].get("topic_arn") == arn]
        attrs = {
            "TopicArn": arn,
            "Owner": self.account,
            "DisplayName": "",
            "SubscriptionsConfirmed": str(len(subs)),
            "SubscriptionsPending": "0",
            "SubscriptionsDeleted": "0",
            **(topic.get("attributes") or {}),
        }
        return {"Attributes": Entries(attrs)}

    async def _ASetTopicAttributes(self, params: dict[str, str], caller: Caller) -> None:
        arn = _param(params, "TopicArn")
        name, topic = await self._existing_topic(arn, caller)
        key = _param(params, "AttributeName")
        value = params.get("AttributeValue", "")
        _check_topic_attribute(key, value)
        if key == "FifoTopic":
            raise AwsError("InvalidParameter", "Invalid parameter: AttributeName")
        attrs = dict(topic.get("attributes") or {})
        attrs[key] = value
        await self.queues.put_sns_topic(name, {**topic, "attributes": attrs})

    # ---- subscriptions ----------------------------------------------------------------

    def _sub_attributes(
        self, params: dict[str, str]
    ) -> tuple[dict[str, str], dict[str, Any] | None]:
        """A Subscribe's `Attributes` (checked) and the filter policy they give."""
        attrs = _entries(params, "Attributes.entry", "key", "value")
        self._check_sub_attributes(attrs)
        return attrs, self._filter(attrs)

    async def _existing_sub(self, arn: str, endpoint: str) -> dict[str, Any] | None:
        """The SNS subscription of `endpoint` to the topic `arn`, if there is one."""
        for sub in await self._sns_subs():
            opts = sub["options"]
            if opts.get("topic_arn") == arn and opts.get("endpoint") == endpoint:
                return sub
        return None

    def _filter(self, attrs: Mapping[str, str]) -> dict[str, Any] | None:
        """The Herald filter policy of an SNS subscription's attributes."""
        raw = attrs.get("FilterPolicy")
        if not raw:
            return None
        try:
            policy = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AwsError(
                "InvalidParameter", "Invalid parameter: FilterPolicy: failed to parse JSON."
            ) from None
        if not isinstance(policy, dict):
            raise AwsError("InvalidParameter", "Invalid parameter: FilterPolicy: not an object.")
        scope = attrs.get("FilterPolicyScope", "MessageAttributes")
        if scope not in ("MessageAttributes", "MessageBody"):
            raise AwsError("InvalidParameter", "Invalid parameter: FilterPolicyScope")
        if scope == "MessageBody":
            policy = flatten(policy)
        compile_filter(policy)
        return dict(policy)

    def _check_sub_attributes(self, attrs: Mapping[str, str]) -> None:
        for key, value in attrs.items():
            if key not in _SUB_ATTRIBUTES:
                raise AwsError("InvalidParameter", f"Invalid parameter: Attributes Reason: {key}")
            if len(value) > MAX_ATTRIBUTE_VALUE * (10 if key == "FilterPolicy" else 1):
                raise AwsError("InvalidParameter", f"Invalid parameter: {key}: too long")
            if key == "RawMessageDelivery" and value.lower() not in ("true", "false"):
                raise AwsError("InvalidParameter", "Invalid parameter: RawMessageDelivery")
            if key in ("DeliveryPolicy", "RedrivePolicy") and value:
                try:
                    orjson.loads(value)
                except orjson.JSONDecodeError:
                    raise AwsError("InvalidParameter", f"Invalid parameter: {key}") from None

    async def _ASubscribe(self, params: dict[str, str], caller: Caller) -> dict[str, Any]:
        arn = _param(params, "TopicArn")
        name, _ = await self._existing_topic(arn, caller)
        protocol = _param(params, "Protocol").lower()
        endpoint = params.get("Endpoint", "")
        if protocol in ("http", "https"):
            return await self._subscribe_webhook(arn, name, protocol, endpoint, params, caller)
        if protocol != "sqs":
            raise AwsError(
                "InvalidParameter",
                f"Invalid parameter: Protocol: Herald delivers SNS to 'sqs', 'http' and "
                f"'https' endpoints only (not {protocol!r}); see docs/aws.md",
            )
        parts = endpoint.split(":")
        if len(parts) != 6 or parts[:3] != ["arn", "aws", "sqs"]:
            raise AwsError("InvalidParameter", "Invalid parameter: SQS endpoint ARN")
        queue = parts[5]
        caller.check_queue(queue)
        if queue.endswith(".fifo") != name.endswith(".fifo"):
            raise AwsError(
                "InvalidParameter",
                "Invalid parameter: Invalid SQS endpoint: FIFO topics deliver to FIFO queues "
                "and standard topics to standard queues",
            )
        attrs, policy = self._sub_attributes(params)
        existing = await self._existing_sub(arn, endpoint)
        if existing is not None:
            opts = existing["options"]
            if (opts.get("attributes") or {}) != attrs and attrs:
                raise AwsError(
                    "InvalidParameter",
                    "Invalid parameter: Attributes Reason: Subscription already exists "
                    "with different attributes",
                )
            return {"SubscriptionArn": opts["subscription_arn"]}
        sub = await self.queues.create_subscription(name, queue, policy, {"attributes": attrs})
        options = self._sub_options(arn, sub["id"], endpoint, attrs, caller.base_url)
        await self.queues.update_subscription(sub["id"], policy, options)
        return {"SubscriptionArn": options["subscription_arn"]}

    async def _subscribe_webhook(
        self,
        arn: str,
        name: str,
        protocol: str,
        endpoint: str,
        params: dict[str, str],
        caller: Caller,
    ) -> dict[str, Any]:
        """An http(s) subscription: a Herald webhook subscription that delivers SNS
        envelopes and is confirmed with ConfirmSubscription (or the confirm URL)."""
        if not endpoint.lower().startswith(protocol + "://"):
            raise AwsError("InvalidParameter", f"Invalid parameter: Endpoint must match {protocol}")
        attrs, policy = self._sub_attributes(params)
        existing = await self._existing_sub(arn, endpoint)
        if existing is not None:
            return {"SubscriptionArn": self._shown_arn(existing)}
        out = await self.queues.create_webhook_subscription(
            name, endpoint, policy, **self._hook_settings(attrs), confirm=True
        )
        options = self._sub_options(
            arn, out["id"], endpoint, attrs, caller.base_url, protocol=protocol
        )
        await self.queues.update_subscription(out["id"], policy, options)
        webhooks = self.node.webhooks
        if webhooks is not None:
            webhooks.changed()
            token = out["token"]
            # SubscribeURL: the native confirm route, which needs no AWS signature.
            root = caller.base_url.removesuffix("/aws")
            confirm_url = f"{root}/v1/subscriptions/{out['id']}/confirm?token={token}"
            task = asyncio.create_task(webhooks.send_confirmation(out["id"], confirm_url))
            _background.add(task)
            task.add_done_callback(_background.discard)
        return {"SubscriptionArn": "pending confirmation"}

    def _hook_settings(self, attrs: Mapping[str, str]) -> dict[str, Any]:
        """DeliveryPolicy and RedrivePolicy as webhook settings (raw stays off: the SNS
        payload, raw or not, is made at fan-out by sns_delivery)."""
        out: dict[str, Any] = {}
        if attrs.get("DeliveryPolicy"):
            policy = orjson.loads(attrs["DeliveryPolicy"])
            # A topic-style policy nests the http one under "http".
            if isinstance(policy, dict) and isinstance(policy.get("http"), dict):
                policy = policy["http"]
            out["delivery_policy"] = policy
        if attrs.get("RedrivePolicy"):
            redrive = orjson.loads(attrs["RedrivePolicy"])
            target = redrive.get("deadLetterTargetArn") if isinstance(redrive, dict) else None
            parts = target.split(":") if isinstance(target, str) else []
            if len(parts) != 6 or parts[:3] != ["arn", "aws", "sqs"]:
                raise AwsError("InvalidParameter", "Invalid parameter: RedrivePolicy")
            out["dead_letter"] = {"queue": parts[5]}
        return out

    def _shown_arn(self, sub: Mapping[str, Any]) -> str:
        """The ARN as SNS shows it: "PendingConfirmation" until confirmed."""
        if sub.get("status") == "pending_confirmation":
            return "PendingConfirmation"
        return str(sub["options"]["subscription_arn"])

    async def _AUnsubscribe(self, params: dict[str, str], caller: Caller) -> None:
        sub = await self._sub(_param(params, "SubscriptionArn"), caller)
        await self.queues.delete_subscription(sub["id"])

    async def _AConfirmSubscription(self, params: dict[str, str], caller: Caller) -> dict[str, Any]:
        arn = _param(params, "TopicArn")
        token = _param(params, "Token")
        self._topic_name(arn, caller)
        for sub in await self._sns_subs():
            if sub["options"].get("topic_arn") != arn or sub.get("status") is None:
                continue  # sqs subscriptions need no confirmation
            try:
                await self.queues.confirm_subscription(sub["id"], token)
            except HeraldError:
                continue  # another subscription's token
            if self.node.webhooks is not None:
                self.node.webhooks.changed()
            return {"SubscriptionArn": sub["options"]["subscription_arn"]}
        raise AwsError("InvalidParameter", "Invalid token")

    def _sub_summary(self, sub: Mapping[str, Any]) -> dict[str, str]:
        opts = sub["options"]
        return {
            "SubscriptionArn": self._shown_arn(sub),
            "Owner": self.account,
            "Protocol": opts.get("protocol", "sqs"),
            "Endpoint": opts["endpoint"],
            "TopicArn": opts["topic_arn"],
        }

    async def _AListSubscriptions(self, params: dict[str, str], caller: Caller) -> dict[str, Any]:
        subs = [
            self._sub_summary(s)
            for s in await self._sns_subs()
            if "subscription_arn" in s["options"]
        ]
        return self._page(subs, params.get("NextToken"))

    async def _AListSubscriptionsByTopic(
        self, params: dict[str, str], caller: Caller
    ) -> dict[str, Any]:
        arn = _param(params, "TopicArn")
        await self._existing_topic(arn, caller)
        subs = [
            self._sub_summary(s)
            for s in await self._sns_subs()
            if s["options"].get("topic_arn") == arn and "subscription_arn" in s["options"]
        ]
        return self._page(subs, params.get("NextToken"))

    def _page(self, subs: list[dict[str, str]], token: str | None) -> dict[str, Any]:
        subs.sort(key=lambda s: s["SubscriptionArn"])
        if token:
            subs = [s for s in subs if s["SubscriptionArn"] > token]
        out: dict[str, Any] = {"Subscriptions": subs[:PAGE]}
        if len(subs) > PAGE:
            out["NextToken"] = subs[PAGE - 1]["SubscriptionArn"]
        return out

    async def _AGetSubscriptionAttributes(
        self, params: dict[str, str], caller: Caller
    ) -> dict[str, Any]:
        sub = await self._sub(_param(params, "SubscriptionArn"), caller)
        summary = self._sub_summary(sub)
        attrs = {
            **{k: v for k, v in summary.items() if k != "Endpoint"},
            "Endpoint": summary["Endpoint"],
            "ConfirmationWasAuthenticated": "true",
            "PendingConfirmation": str(sub.get("status") == "pending_confirmation").lower(),
            "RawMessageDelivery": "false",
            **(sub["options"].get("attributes") or {}),
        }
        return {"Attributes": Entries(attrs)}

    async def _ASetSubscriptionAttributes(self, params: dict[str, str], caller: Caller) -> None:
        sub = await self._sub(_param(params, "SubscriptionArn"), caller)
        key = _param(params, "AttributeName")
        value = params.get("AttributeValue", "")
        attrs = dict(sub["options"].get("attributes") or {})
        attrs[key] = value
        if not value and key in ("FilterPolicy", "DeliveryPolicy", "RedrivePolicy"):
            del attrs[key]
        self._check_sub_attributes(attrs)
        policy = self._filter(attrs)
        await self.queues.update_subscription(
            sub["id"], policy, {**sub["options"], "attributes": attrs}
        )

    # ---- publishing -------------------------------------------------------------------

    def _entry(
        self, name: str, topic: Mapping[str, Any], params: Mapping[str, str]
    ) -> dict[str, Any]:
        """A Publish (or one PublishBatch entry) as a Herald publish of topic `name`."""
        message = params.get("Message")
        if message is None or message == "":
            raise AwsError("InvalidParameter", "Invalid parameter: Empty message")
        if params.get("MessageStructure") == "json":
            try:
                doc = orjson.loads(message)
                message = doc.get("sqs", doc["default"])
            except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError):
                raise AwsError(
                    "InvalidParameter",
                    "Invalid parameter: Message Structure - No default entry in JSON message body",
                ) from None
        parsed = _attributes_in(params, "MessageAttributes")
        meta = parsed["meta"]
        subject = params.get("Subject")
        if subject:
            meta["Subject"] = subject
        group = params.get("MessageGroupId")
        dedup = params.get("MessageDeduplicationId")
        if name.endswith(".fifo"):
            if not group:
                raise AwsError(
                    "InvalidParameter",
                    "Invalid parameter: The MessageGroupId parameter is required for FIFO topics",
                )
            meta["GroupId"] = group
            if not dedup:
                content_dedup = (topic.get("attributes") or {}).get("ContentBasedDeduplication")
                if str(content_dedup).lower() != "true":
                    raise AwsError(
                        "InvalidParameter",
                        "Invalid parameter: The topic should either have "
                        "ContentBasedDeduplication enabled or MessageDeduplicationId provided "
                        "explicitly",
                    )
                dedup = hashlib.sha256(message.encode()).hexdigest()
            meta["DedupId"] = dedup
        elif dedup:
            raise AwsError(
                "InvalidParameter",
                "Invalid parameter: MessageDeduplicationId Reason: The request includes "
                "MessageDeduplicationId parameter that is not valid for this topic type",
            )
        attrs = parsed["attrs"]
        if meta:
            attrs[SNS_META] = orjson.dumps(meta).decode()
        return {"topic": name, "data": message, "attributes": attrs}

    async def _publish(self, entries: list[Mapping[str, Any]]) -> list[Any]:
        principal = Principal(sub="aws", admin=True)
        return await self.node.publish(entries, principal)

    async def _APublish(self, params: dict[str, str], caller: Caller) -> dict[str, Any]:
        arn = params.get("TopicArn") or params.get("TargetArn")
        if not arn:
            raise AwsError("InvalidParameter", "Invalid parameter: TopicArn or TargetArn")
        name, topic = await self._existing_topic(arn, caller)
        (outcome,) = await self._publish([self._entry(name, topic, params)])
        if isinstance(outcome, HeraldError):
            raise outcome
        return {"MessageId": outcome.id}

    async def _APublishBatch(self, params: dict[str, str], caller: Caller) -> dict[str, Any]:
        name, topic = await self._existing_topic(_param(params, "TopicArn"), caller)
        members = _members(params, "PublishBatchRequestEntries")
        if not members:
            raise AwsError("EmptyBatchRequest", "The batch request doesn't contain any entries")
        if len(members) > MAX_BATCH:
            raise AwsError(
                "TooManyEntriesInBatchRequest",
                f"The batch request contains more entries than permissible ({MAX_BATCH}).",
            )
        ids = [m.get("Id", "") for m in members]
        if len(set(ids)) != len(ids):
            raise AwsError(
                "BatchEntryIdsNotDistinct",
                "Two or more batch entries in the request have the same Id.",
            )
        failed: list[dict[str, Any]] = []
        good: list[tuple[str, Mapping[str, Any]]] = []
        for m in members:
            try:
                good.append((m["Id"], self._entry(name, topic, m)))
            except AwsError as exc:
                failed.append(
                    {
                        "Id": m.get("Id", ""),
                        "Code": exc.code,
                        "Message": exc.message,
                        "SenderFault": True,
                    }
                )
        successful: list[dict[str, Any]] = []
        if good:
            for (entry_id, _), outcome in zip(
                good, await self._publish([e for _, e in good]), strict=True
            ):
                if isinstance(outcome, HeraldError):
                    failed.append(
                        {
                            "Id": entry_id,
                            "Code": "InvalidParameter",
                            "Message": outcome.message,
                            "SenderFault": True,
                        }
                    )
                else:
                    successful.append({"Id": entry_id, "MessageId": outcome.id})
        return {"Successful": successful, "Failed": failed}

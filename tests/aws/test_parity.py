"""Parity: the same boto3 scenarios against Herald and against moto (server mode).

Each scenario records what every call answered (the response, or the error code).
Records are normalized where AWS itself is not deterministic (ids, receipts, times,
host and account) and then compared field by field. Every difference that remains
must be listed in KNOWN with its reason; docs/aws.md lists the same differences.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from aws_helpers import drain, make_client
from procs import ROOT, HeraldServer

pytestmark = pytest.mark.integration

Record = list[tuple[str, Any]]
Scenario = Callable[[Any, Any, Callable[[str, Callable[[], Any]], Any], str], None]

_VOLATILE = {
    "MessageId",
    "ReceiptHandle",
    "SentTimestamp",
    "ApproximateFirstReceiveTimestamp",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "Timestamp",
    "TaskHandle",
    "StartedTimestamp",
    "SequenceNumber",
    "SenderId",
    "RequestId",
    "Signature",
    "SigningCertURL",
    "UnsubscribeURL",
    "SubscriptionArn",
    "NextToken",  # opaque on both sides
    # Herald does not sign envelopes (docs/aws.md): the version names no real signature.
    "SignatureVersion",
}


_JSON_TEXT = {"RedrivePolicy", "RedriveAllowPolicy", "Policy", "FilterPolicy"}


def envelope(body: Any) -> dict[str, Any] | None:
    """The SNS envelope a queue message carries, if it is one."""
    if not isinstance(body, str) or not body.lstrip().startswith("{"):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc.get("Type") == "Notification" else None


def normalize(value: Any, base: str, account: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "ResponseMetadata":
                continue
            if k in _VOLATILE:
                out[k] = "<volatile>"
            elif k == "Body" and envelope(v) is not None:
                out[k] = normalize(envelope(v), base, account)
                # The digest covers ids and times, so it differs on every run.
                out["MD5OfBody"] = "<volatile>"
            elif k in _JSON_TEXT and isinstance(v, str) and v:
                out[k] = normalize(json.loads(v), base, account)
            elif k == "MD5OfBody" and "MD5OfBody" in out:
                continue
            else:
                out[k] = normalize(v, base, account)
        return out
    if isinstance(value, list):
        return [normalize(v, base, account) for v in value]
    if isinstance(value, str):
        return value.replace(base, "<url>").replace(account, "<account>")
    return value


def run(scenario: Scenario, url: str, suffix: str) -> Record:
    sqs = make_client(url, "sqs")
    sns = make_client(url, "sns")
    record: Record = []

    def rec(label: str, call: Callable[[], Any]) -> Any:
        try:
            result = call()
        except ClientError as exc:
            record.append((label, {"Error": exc.response["Error"]["Code"]}))
            return None
        record.append((label, result))
        return result

    scenario(sqs, sns, rec, suffix)
    account = sqs.get_queue_attributes(
        QueueUrl=sqs.create_queue(QueueName=f"acct-{suffix}")["QueueUrl"],
        AttributeNames=["QueueArn"],
    )["Attributes"]["QueueArn"].split(":")[4]
    return [(label, normalize(r, url, account)) for label, r in record]


def diff(a: Any, b: Any, path: str, out: dict[str, tuple[Any, Any]]) -> None:
    """Where `a` (Herald) and `b` (moto) differ: path -> (ours, theirs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            diff(x, y, f"{path}[{i}]", out)
    elif a != b:
        out[path or "."] = (a, b)


def drain_sorted(sqs: Any, url: str, **kw: Any) -> list[dict[str, Any]]:
    """`drain`, sorted by message text: the two sides need not deliver in one order."""
    out = drain(sqs, url, **kw)
    return sorted(out, key=lambda m: (envelope(m["Body"]) or {}).get("Message", m["Body"]))


def fifo_sends(n: int, every: int) -> list[dict[str, str]]:
    """FIFO arguments of `n` sends in one group whose deduplication ids repeat every
    `every` sends (the repeats are dropped as duplicates)."""
    return [{"MessageGroupId": "g", "MessageDeduplicationId": f"d{i % every}"} for i in range(n)]


# ---- scenarios -----------------------------------------------------------------------


def queue_lifecycle(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    attrs = {"VisibilityTimeout": "40", "DelaySeconds": "2", "MessageRetentionPeriod": "3600"}
    url = rec("create", lambda: sqs.create_queue(QueueName=f"life-{s}", Attributes=attrs))
    url = url["QueueUrl"]
    rec("create again, same", lambda: sqs.create_queue(QueueName=f"life-{s}", Attributes=attrs))
    rec(
        "create again, different",
        lambda: sqs.create_queue(QueueName=f"life-{s}", Attributes={"VisibilityTimeout": "1"}),
    )
    rec("get url", lambda: sqs.get_queue_url(QueueName=f"life-{s}"))
    names = [
        "VisibilityTimeout",
        "DelaySeconds",
        "MessageRetentionPeriod",
        "MaximumMessageSize",
        "ReceiveMessageWaitTimeSeconds",
        "ApproximateNumberOfMessages",
        "QueueArn",
    ]
    rec("attributes", lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names))
    rec(
        "set",
        lambda: sqs.set_queue_attributes(
            QueueUrl=url, Attributes={"VisibilityTimeout": "5", "MaximumMessageSize": "2048"}
        ),
    )
    rec("attributes after", lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names))
    rec("bad attribute", lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Nope"]))
    rec(
        "bad value",
        lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "x"}),
    )
    rec("tag", lambda: sqs.tag_queue(QueueUrl=url, Tags={"a": "1", "b": "2"}))
    rec("untag", lambda: sqs.untag_queue(QueueUrl=url, TagKeys=["b"]))
    rec("tags", lambda: sqs.list_queue_tags(QueueUrl=url))
    for i in range(3):
        sqs.create_queue(QueueName=f"page-{s}-{i}")
    rec("list prefix", lambda: sqs.list_queues(QueueNamePrefix=f"page-{s}"))
    rec("list none", lambda: sqs.list_queues(QueueNamePrefix=f"nothing-{s}"))
    rec("purge", lambda: sqs.purge_queue(QueueUrl=url))
    rec("delete", lambda: sqs.delete_queue(QueueUrl=url))
    rec("get url of deleted", lambda: sqs.get_queue_url(QueueName=f"life-{s}"))
    rec("bad name", lambda: sqs.create_queue(QueueName="bad name!"))


def messages(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    url = sqs.create_queue(QueueName=f"msgs-{s}")["QueueUrl"]
    attrs = {
        "s": {"DataType": "String", "StringValue": "text ✓"},
        "n": {"DataType": "Number", "StringValue": "12.50"},
        "b": {"DataType": "Binary", "BinaryValue": b"\x01\x02"},
        "c": {"DataType": "Number.int", "StringValue": "3"},
    }
    rec(
        "send",
        lambda: sqs.send_message(QueueUrl=url, MessageBody="hello ✓", MessageAttributes=attrs),
    )
    rec(
        "batch",
        lambda: sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": "a", "MessageBody": "a"},
                {"Id": "b", "MessageBody": "b", "DelaySeconds": 0},
                {"Id": "c", "MessageBody": "c", "MessageDeduplicationId": "x"},
            ],
        ),
    )
    rec("too big", lambda: sqs.send_message(QueueUrl=url, MessageBody="x" * 300_000))
    rec(
        "receive",
        lambda: {
            "Messages": drain_sorted(
                sqs,
                url,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        },
    )
    rec("empty long poll", lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1))
    rec("delete bad handle", lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle="junk"))
    rec(
        "receive too many",
        lambda: sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11),
    )
    rec("send to missing", lambda: sqs.send_message(QueueUrl=url + "-nope", MessageBody="x"))


def batch_errors(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    url = sqs.create_queue(QueueName=f"batch-{s}")["QueueUrl"]
    rec(
        "same ids",
        lambda: sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": "a", "MessageBody": "1"}, {"Id": "a", "MessageBody": "2"}],
        ),
    )
    rec(
        "eleven",
        lambda: sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(11)]
        ),
    )
    rec("empty", lambda: sqs.send_message_batch(QueueUrl=url, Entries=[]))
    rec(
        "bad id",
        lambda: sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a b", "MessageBody": "x"}]),
    )
    sqs.send_message(QueueUrl=url, MessageBody="m")
    m = sqs.receive_message(QueueUrl=url)["Messages"][0]
    rec(
        "delete batch",
        lambda: sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": "ok", "ReceiptHandle": m["ReceiptHandle"]}],
        ),
    )


def visibility(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    url = sqs.create_queue(QueueName=f"vis-{s}", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="v")
    m = sqs.receive_message(QueueUrl=url)["Messages"][0]
    rec("hidden", lambda: sqs.receive_message(QueueUrl=url))
    rec(
        "release",
        lambda: sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        ),
    )
    again = rec(
        "again",
        lambda: sqs.receive_message(
            QueueUrl=url, MessageSystemAttributeNames=["ApproximateReceiveCount"]
        ),
    )
    handle = again["Messages"][0]["ReceiptHandle"]
    rec(
        "batch change",
        lambda: sqs.change_message_visibility_batch(
            QueueUrl=url, Entries=[{"Id": "x", "ReceiptHandle": handle, "VisibilityTimeout": 0}]
        ),
    )
    rec(
        "bad timeout",
        lambda: sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=50_000
        ),
    )


def fifo(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    rec(
        "fifo without suffix",
        lambda: sqs.create_queue(QueueName=f"nofifo-{s}", Attributes={"FifoQueue": "true"}),
    )
    url = rec(
        "create",
        lambda: sqs.create_queue(QueueName=f"fifo-{s}.fifo", Attributes={"FifoQueue": "true"}),
    )["QueueUrl"]
    rec(
        "no dedup id",
        lambda: sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g"),
    )
    rec("no group", lambda: sqs.send_message(QueueUrl=url, MessageBody="x"))
    for i, fifo in enumerate(fifo_sends(4, 3)):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", **fifo)
    rec("received", lambda: [m["Body"] for m in drain_sorted(sqs, url)])
    rec(
        "delay on fifo",
        lambda: sqs.send_message(
            QueueUrl=url,
            MessageBody="x",
            MessageGroupId="g",
            MessageDeduplicationId="z",
            DelaySeconds=5,
        ),
    )


def dead_letters(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    dlq = sqs.create_queue(QueueName=f"dlq-{s}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    src = sqs.create_queue(
        QueueName=f"src-{s}", Attributes={"RedrivePolicy": policy, "VisibilityTimeout": "0"}
    )["QueueUrl"]
    rec("policy", lambda: sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["RedrivePolicy"]))
    sqs.send_message(QueueUrl=src, MessageBody="poison")
    sqs.receive_message(QueueUrl=src)
    rec("source empty", lambda: sqs.receive_message(QueueUrl=src))
    rec(
        "in dlq",
        lambda: [
            m["Body"]
            for m in sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=0).get("Messages", [])
        ],
    )
    rec("sources", lambda: sqs.list_dead_letter_source_queues(QueueUrl=dlq))
    rec("move", lambda: sqs.start_message_move_task(SourceArn=dlq_arn))
    time.sleep(0.2)
    rec(
        "tasks",
        lambda: {
            k: v
            for k, v in sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0].items()
            if k in ("Status", "SourceArn", "ApproximateNumberOfMessagesMoved")
        },
    )


def permissions(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    url = sqs.create_queue(QueueName=f"perm-{s}")["QueueUrl"]
    rec(
        "add",
        lambda: sqs.add_permission(
            QueueUrl=url, Label="l1", AWSAccountIds=["111122223333"], Actions=["SendMessage"]
        ),
    )
    rec(
        "add again",
        lambda: sqs.add_permission(
            QueueUrl=url, Label="l1", AWSAccountIds=["111122223333"], Actions=["SendMessage"]
        ),
    )
    rec("remove", lambda: sqs.remove_permission(QueueUrl=url, Label="l1"))
    rec("remove unknown", lambda: sqs.remove_permission(QueueUrl=url, Label="l1"))


def sns_filters(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    topic = rec("topic", lambda: sns.create_topic(Name=f"events-{s}"))["TopicArn"]
    policies = {
        "range": {"FilterPolicy": json.dumps({"price": [{"numeric": [">", 10, "<=", 100]}]})},
        "but": {"FilterPolicy": json.dumps({"kind": [{"anything-but": ["refund", "void"]}]})},
        "prefix": {"FilterPolicy": json.dumps({"kind": [{"prefix": "ord"}]})},
        "exists": {"FilterPolicy": json.dumps({"vip": [{"exists": True}]})},
        "raw": {"RawMessageDelivery": "true"},
        "body": {
            "FilterPolicy": json.dumps({"region": ["eu"]}),
            "FilterPolicyScope": "MessageBody",
        },
    }
    urls = {}
    for name, attrs in policies.items():
        url = sqs.create_queue(QueueName=f"f-{name}-{s}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attrs)
        urls[name] = url
    events = [
        ("order", "5", "eu"),
        ("order", "50", "us"),
        ("refund", "100", "eu"),
        ("void", "101", "us"),
        ("other", "10.5", "eu"),
    ]
    for i, (kind, price, region) in enumerate(events):
        attrs = {
            "kind": {"DataType": "String", "StringValue": kind},
            "price": {"DataType": "Number", "StringValue": price},
        }
        if i % 2:
            attrs["vip"] = {"DataType": "String", "StringValue": "yes"}
        sns.publish(
            TopicArn=topic,
            Message=json.dumps({"kind": kind, "region": region}),
            Subject=f"s{i}",
            MessageAttributes=attrs,
        )
    for name, url in urls.items():
        rec(name, lambda url=url: drain_sorted(sqs, url, MessageAttributeNames=["All"]))


def sns_management(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    topic = rec("create", lambda: sns.create_topic(Name=f"mgmt-{s}"))["TopicArn"]
    rec("create again", lambda: sns.create_topic(Name=f"mgmt-{s}"))
    rec("fifo name without attr", lambda: sns.create_topic(Name=f"mgmt-{s}.fifo"))
    url = sqs.create_queue(QueueName=f"mgmt-{s}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sub = rec(
        "subscribe",
        lambda: sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn),
    )["SubscriptionArn"]
    rec("by topic", lambda: sns.list_subscriptions_by_topic(TopicArn=topic))
    keys = (
        "Protocol",
        "Endpoint",
        "TopicArn",
        "RawMessageDelivery",
        "PendingConfirmation",
        "FilterPolicy",
    )
    rec(
        "attributes",
        lambda: {
            k: v
            for k, v in sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"].items()
            if k in keys
        },
    )
    rec(
        "set raw",
        lambda: sns.set_subscription_attributes(
            SubscriptionArn=sub, AttributeName="RawMessageDelivery", AttributeValue="true"
        ),
    )
    rec("publish missing topic", lambda: sns.publish(TopicArn=topic + "-x", Message="m"))
    rec(
        "publish batch",
        lambda: sorted(
            s["Id"]
            for s in sns.publish_batch(
                TopicArn=topic,
                PublishBatchRequestEntries=[
                    {"Id": "1", "Message": "a"},
                    {"Id": "2", "Message": "b"},
                ],
            )["Successful"]
        ),
    )
    rec("raw bodies", lambda: [m["Body"] for m in drain_sorted(sqs, url)])
    rec(
        "batch same ids",
        lambda: sns.publish_batch(
            TopicArn=topic,
            PublishBatchRequestEntries=[{"Id": "1", "Message": "a"}, {"Id": "1", "Message": "b"}],
        ),
    )
    rec("unsubscribe", lambda: sns.unsubscribe(SubscriptionArn=sub))
    rec("by topic after", lambda: sns.list_subscriptions_by_topic(TopicArn=topic))
    rec("delete", lambda: sns.delete_topic(TopicArn=topic))
    rec(
        "listed after delete",
        lambda: [t for t in sns.list_topics()["Topics"] if t["TopicArn"] == topic],
    )


def more_queue_actions(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    for i in range(3):
        sqs.create_queue(QueueName=f"more-{s}-{i}")
    first = rec("page 1", lambda: sqs.list_queues(QueueNamePrefix=f"more-{s}", MaxResults=2))
    rec(
        "page 2",
        lambda: sqs.list_queues(
            QueueNamePrefix=f"more-{s}", MaxResults=2, NextToken=first["NextToken"]
        ),
    )
    url = sqs.get_queue_url(QueueName=f"more-{s}-0")["QueueUrl"]
    rec("tags none", lambda: sqs.list_queue_tags(QueueUrl=url))
    rec(
        "set wait",
        lambda: sqs.set_queue_attributes(
            QueueUrl=url, Attributes={"ReceiveMessageWaitTimeSeconds": "1"}
        ),
    )
    rec("default long poll", lambda: sqs.receive_message(QueueUrl=url))
    rec("cancel unknown task", lambda: sqs.cancel_message_move_task(TaskHandle="nope"))


def sns_more(sqs: Any, sns: Any, rec: Any, s: str) -> None:
    topic = rec(
        "fifo topic",
        lambda: sns.create_topic(Name=f"more-{s}.fifo", Attributes={"FifoTopic": "true"}),
    )["TopicArn"]
    url = sqs.create_queue(
        QueueName=f"more-{s}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sub = sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
    )["SubscriptionArn"]
    tags = {"tags": {"DataType": "String.Array", "StringValue": '["a", "b"]'}}
    for i, fifo in enumerate(fifo_sends(3, 2)):
        sns.publish(TopicArn=topic, Message=f"m{i}", MessageAttributes=tags, **fifo)
    rec("fifo raw", lambda: [m["Body"] for m in drain_sorted(sqs, url)])
    rec("publish without group", lambda: sns.publish(TopicArn=topic, Message="x"))
    policy = json.dumps({"healthyRetryPolicy": {"numRetries": 3}})
    rec(
        "delivery policy",
        lambda: sns.set_subscription_attributes(
            SubscriptionArn=sub, AttributeName="DeliveryPolicy", AttributeValue=policy
        ),
    )
    rec(
        "policy back",
        lambda: json.loads(
            sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["DeliveryPolicy"]
        ),
    )
    rec("confirm bogus", lambda: sns.confirm_subscription(TopicArn=topic, Token="bogus"))
    rec(
        "listed",
        lambda: [x for x in sns.list_subscriptions()["Subscriptions"] if x["TopicArn"] == topic],
    )
    rec("topic attributes", lambda: {
        k: v for k, v in sns.get_topic_attributes(TopicArn=topic)["Attributes"].items()
        if k in ("TopicArn", "FifoTopic", "SubscriptionsConfirmed")
    })  # fmt: skip


SCENARIOS: list[Scenario] = [
    queue_lifecycle,
    messages,
    batch_errors,
    visibility,
    fifo,
    dead_letters,
    permissions,
    sns_filters,
    sns_management,
    more_queue_actions,
    sns_more,
]

# (scenario, step, path) -> why Herald differs from moto. docs/aws.md lists each one.
_MOTO_NO_MOVE_TASKS = "moto 5.2.5 answers 500: it lacks the message move task actions"
KNOWN: dict[tuple[str, str, str], str] = {
    ("queue_lifecycle", "bad value", ".Error"): "moto answers 500; AWS InvalidAttributeValue",
    ("dead_letters", "move", ".Error"): _MOTO_NO_MOVE_TASKS,
    ("dead_letters", "move", ".TaskHandle"): _MOTO_NO_MOVE_TASKS,
    ("dead_letters", "tasks", ".Error"): _MOTO_NO_MOVE_TASKS,
    ("dead_letters", "tasks", ".Status"): _MOTO_NO_MOVE_TASKS,
    ("dead_letters", "tasks", ".SourceArn"): _MOTO_NO_MOVE_TASKS,
    ("dead_letters", "tasks", ".ApproximateNumberOfMessagesMoved"): _MOTO_NO_MOVE_TASKS,
    ("more_queue_actions", "cancel unknown task", ".Error"): _MOTO_NO_MOVE_TASKS,
    ("sns_more", "publish without group", ".Error"): "moto: MissingParameter",
    ("sns_more", "confirm bogus", ".Error"): "moto confirms any token",
    ("sns_more", "confirm bogus", ".SubscriptionArn"): "moto confirms any token",
    ("sns_more", "topic attributes", ".SubscriptionsConfirmed"): "moto does not count",
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_parity_with_moto(scenario: Scenario, herald_aws: HeraldServer, moto_url: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    ours = run(scenario, herald_aws.http, suffix)
    theirs = run(scenario, moto_url, suffix)
    assert [label for label, _ in ours] == [label for label, _ in theirs]
    found: dict[tuple[str, str, str], tuple[Any, Any]] = {}
    for (label, a), (_, b) in zip(ours, theirs, strict=True):
        paths: dict[str, tuple[Any, Any]] = {}
        diff(a, b, "", paths)
        for p, pair in paths.items():
            found[(scenario.__name__, label, p)] = pair
    unexpected = {k: v for k, v in found.items() if k not in KNOWN}
    assert not unexpected, "\n".join(
        f"{k}: herald={json.dumps(a, default=str)[:300]} moto={json.dumps(b, default=str)[:300]}"
        for k, (a, b) in unexpected.items()
    )
    stale = [k for k in KNOWN if k[0] == scenario.__name__ and k not in found]
    assert not stale, f"KNOWN lists differences that no longer occur: {stale}"


def test_every_known_difference_is_documented() -> None:
    doc = (ROOT / "docs" / "aws.md").read_text()
    missing = [k for k in KNOWN if f"`{k[0]}` / {k[1]}" not in doc]
    assert not missing, missing
    assert re.search(r"moto", doc)

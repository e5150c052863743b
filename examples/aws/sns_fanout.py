"""SNS -> SQS fanout with filter policies (numeric ranges, anything-but, body scope).

AWS_ENDPOINT_URL=http://localhost:8080 ... python examples/aws/sns_fanout.py
Prints one JSON line: what each queue received.
"""

import json

import boto3

sns = boto3.client("sns")
sqs = boto3.client("sqs")

topic_arn = sns.create_topic(Name="order-events")["TopicArn"]


def queue(name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


subscriptions = {
    # Big orders, whatever their kind.
    "big-orders": {"FilterPolicy": json.dumps({"amount": [{"numeric": [">=", 100]}]})},
    # Everything except refunds, delivered raw.
    "not-refunds": {
        "FilterPolicy": json.dumps({"kind": [{"anything-but": ["refund"]}]}),
        "RawMessageDelivery": "true",
    },
    # Filter on the message body instead of the attributes.
    "eu-orders": {
        "FilterPolicy": json.dumps({"region": ["eu"]}),
        "FilterPolicyScope": "MessageBody",
    },
    # No filter: everything, in the SNS envelope.
    "audit": {},
}
urls = {}
for name, attributes in subscriptions.items():
    url, arn = queue(name)
    urls[name] = url
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)

events = [
    ("order", 50, "us"),
    ("order", 150, "eu"),
    ("refund", 200, "us"),
    ("order", 99.5, "eu"),
]
for kind, amount, region in events:
    sns.publish(
        TopicArn=topic_arn,
        Message=json.dumps({"kind": kind, "amount": amount, "region": region}),
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": kind},
            "amount": {"DataType": "Number", "StringValue": str(amount)},
        },
    )

received = {}
for name, url in urls.items():
    bodies = []
    while True:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        msgs = r.get("Messages", [])
        if not msgs:
            break
        for m in msgs:
            body = json.loads(m["Body"])
            if body.get("Type") == "Notification":  # the SNS envelope
                body = json.loads(body["Message"])
            bodies.append([body["kind"], body["amount"], body["region"]])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    received[name] = sorted(bodies, key=str)
print(json.dumps(received, sort_keys=True))

"""SQS producer: single sends with MessageAttributes, then batches of ten.

Plain boto3. Point it at Herald with the environment alone:
AWS_ENDPOINT_URL=http://localhost:8080 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
AWS_DEFAULT_REGION=us-east-1 python examples/aws/producer.py
"""

import json
import os
import uuid

import boto3

QUEUE = os.environ.get("QUEUE", "orders")
COUNT = int(os.environ.get("COUNT", "25"))

sqs = boto3.client("sqs")
queue_url = sqs.create_queue(
    QueueName=QUEUE, Attributes={"VisibilityTimeout": "30", "ReceiveMessageWaitTimeSeconds": "5"}
)["QueueUrl"]

# One message at a time, with typed attributes.
sent = 0
for i in range(5):
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps({"order_id": str(uuid.uuid4()), "amount": 10 * i}),
        MessageAttributes={
            "customer": {"DataType": "String", "StringValue": f"c-{i}"},
            "amount": {"DataType": "Number", "StringValue": str(10 * i)},
        },
    )
    sent += 1

# The rest in batches of up to ten.
while sent < COUNT:
    n = min(10, COUNT - sent)
    entries = [
        {
            "Id": str(j),
            "MessageBody": json.dumps({"order_id": str(uuid.uuid4()), "amount": j}),
            "MessageAttributes": {"source": {"DataType": "String", "StringValue": "batch"}},
        }
        for j in range(n)
    ]
    result = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    if result.get("Failed"):
        raise SystemExit(f"failed entries: {result['Failed']}")
    sent += n

print(f"sent {sent} messages to {queue_url}")

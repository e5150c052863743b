"""SQS consumer: long-polls, handles, deletes in batches; stops after an empty poll.

AWS_ENDPOINT_URL=http://localhost:8080 ... python examples/aws/consumer.py
"""

import json
import os

import boto3

QUEUE = os.environ.get("QUEUE", "orders")

sqs = boto3.client("sqs")
queue_url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]

handled = 0
while True:
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=int(os.environ.get("WAIT", "2")),
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
    )
    messages = response.get("Messages", [])
    if not messages:
        break
    for m in messages:
        order = json.loads(m["Body"])
        assert "order_id" in order
        handled += 1
    sqs.delete_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ],
    )

print(f"handled {handled} messages")

"""Move messages from a queue's DLQ back to the queue.

On AWS this is SQS StartMessageMoveTask. Where that API is missing (moto), a receive / send / delete loop
does it: each message is sent to the queue before it is deleted from the DLQ, so a crash can duplicate a
message (which the run records recognise) but never lose one.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.jobs.queues import QueueSpec

# How an endpoint says it lacks the API (LocalStack, the embedded emulator, older SQS-compatible services).
NOT_IMPLEMENTED = {
    "NotImplemented",
    "UnsupportedOperation",
    "AWS.SimpleQueueService.UnsupportedOperation",
    "InvalidAction",
    "501",
}


def redrive(spec: QueueSpec, max_messages: int = 10_000) -> dict[str, Any]:
    sqs = aws.sqs()
    dlq_url = aws.queue_url(spec.dlq_name())
    queue_url = aws.queue_url(spec.queue_name())
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    try:
        task = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=queue_arn)
        return {"method": "start_message_move_task", "task_handle": task.get("TaskHandle")}
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if error.get("Code") not in NOT_IMPLEMENTED and status not in NOT_IMPLEMENTED:
            raise
    moved = 0
    while moved < max_messages:
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            break
        entries = []
        for i, m in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": m["Body"]}
            if m.get("MessageAttributes"):
                entry["MessageAttributes"] = m["MessageAttributes"]
            if spec.fifo:
                entry["MessageGroupId"] = m.get("Attributes", {}).get("MessageGroupId", "redrive")
                entry["MessageDeduplicationId"] = m["MessageId"]
            entries.append(entry)
        result = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        sent = {e["Id"] for e in result.get("Successful", [])}
        to_delete = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages) if str(i) in sent
        ]
        if to_delete:
            sqs.delete_message_batch(QueueUrl=dlq_url, Entries=to_delete)
        moved += len(to_delete)
        if len(sent) < len(messages):
            break  # what was not sent stays in the DLQ (it becomes visible again)
    return {"method": "receive_send_delete", "moved": moved}

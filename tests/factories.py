"""Small factories for test events and jobs."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from chalicelib.jobs.envelope import Envelope


def sqs_record(body: str, *, message_id: str | None = None, receive_count: int = 1) -> dict[str, Any]:
    """One record as Lambda puts it in an SQS event (each with its own messageId, unlike Chalice's helper)."""
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": "1700000000000",
            "SenderId": "AIDATEST",
            "ApproximateFirstReceiveTimestamp": "1700000000001",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:projectionist-dev-catalog",
        "awsRegion": "us-east-1",
    }


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    return {"Records": [sqs_record(body) for body in bodies]}


def envelope_body(name: str, **args: Any) -> str:
    return Envelope(name=name, args=args).to_body()


def run_directly(envelope: Envelope, context: Any, *, jobs: Any) -> Any:
    """A dispatcher without the job platform: calls the handler, so its exception fails the SQS record.

    Tests of the SQS machinery (partial batch failures, DLQ, concurrency) use it to make records fail at
    the SQS level; the real dispatcher turns a handler's exception into a retry instead."""
    from chalicelib.jobs.registry import JobContext

    return jobs.get(envelope.name).handler(JobContext(envelope=envelope, lambda_context=context), **envelope.args)

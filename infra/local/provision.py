"""Create the same tables, queues, DLQs and bucket the CDK stack creates, from the same specs and models.

Idempotent: existing resources are kept (with their data) and queue attributes are brought in line with
the specs, so changing a spec and restarting `make run` applies it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.jobs.queues import QUEUES, QueueSpec
from chalicelib.models import all_models
from chalicelib.models.base import table_schema
from chalicelib.settings import Settings

log = logging.getLogger("projectionist.local.provision")


def table_definition(model: Any, settings: Settings) -> dict[str, Any]:
    schema = table_schema(model)
    definition: dict[str, Any] = {
        "TableName": settings.resource_name(schema["logical_name"]),
        "KeySchema": schema["key_schema"],
        "AttributeDefinitions": schema["attribute_definitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if schema["global_secondary_indexes"]:
        definition["GlobalSecondaryIndexes"] = [
            {"IndexName": gsi["index_name"], "KeySchema": gsi["key_schema"], "Projection": gsi["projection"]}
            for gsi in schema["global_secondary_indexes"]
        ]
    return definition


def ensure_table(dynamodb: Any, model: Any, settings: Settings) -> str:
    definition = table_definition(model, settings)
    name = definition["TableName"]
    try:
        dynamodb.create_table(**definition)
        log.info("created table %s", name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    ttl = table_schema(model)["ttl_attribute"]
    if ttl and _ttl_status(dynamodb, name) != "ENABLED":
        dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl})
    return name


def _ttl_status(dynamodb: Any, name: str) -> str:
    description = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    return str(description.get("TimeToLiveStatus", "DISABLED"))


def _queue_attributes(spec: QueueSpec, *, dlq: bool) -> dict[str, str]:
    attributes = {
        "MessageRetentionPeriod": str(spec.dlq_retention_seconds if dlq else spec.retention_seconds),
        "VisibilityTimeout": str(spec.visibility_timeout),
    }
    if spec.fifo:
        attributes["FifoQueue"] = "true"
        attributes["ContentBasedDeduplication"] = "false"
    return attributes


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        url: str = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        log.info("created queue %s", name)
        return url
    mutable = {k: v for k, v in attributes.items() if k not in ("FifoQueue",)}
    sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
    return url


def ensure_queue(sqs: Any, spec: QueueSpec, settings: Settings) -> tuple[str, str]:
    """Create (or update) a queue and its DLQ; return their URLs."""
    dlq_url = _ensure_queue(sqs, spec.dlq_name(settings), _queue_attributes(spec, dlq=True))
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = _queue_attributes(spec, dlq=False)
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count}
    attributes["RedrivePolicy"] = json.dumps(redrive)
    url = _ensure_queue(sqs, spec.queue_name(settings), attributes)
    return url, dlq_url


def ensure_bucket(s3: Any, settings: Settings) -> str:
    name = settings.bucket_name
    try:
        s3.head_bucket(Bucket=name)
        return name  # CreateBucket on an existing bucket in us-east-1 "succeeds" and, on moto, empties it
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        if settings.aws_region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": settings.aws_region})
        log.info("created bucket %s", name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return name


def provision(settings: Settings, *, dynamodb: Any, sqs: Any, s3: Any, queues: tuple[QueueSpec, ...] = QUEUES) -> None:
    for model in all_models():
        ensure_table(dynamodb, model, settings)
    for spec in queues:
        ensure_queue(sqs, spec, settings)
    ensure_bucket(s3, settings)

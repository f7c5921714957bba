"""GET /health reports queue depths, and names the part that cannot be reached with a 503."""

from __future__ import annotations

import json
import os
from typing import Any

from chalice.test import Client

import app as app_module
from chalicelib import __version__, aws
from chalicelib.jobs.queues import QUEUES, get_queue
from chalicelib.settings import Settings, reset_settings
from infra.local.provision import provision
from tests.conftest import free_port


def get_health() -> tuple[int, dict[str, Any]]:
    with Client(app_module.app) as client:
        response = client.http.get("/health")
    return response.status_code, json.loads(response.body)


def test_health_is_200_with_every_queue_depth(aws_env: Settings) -> None:
    provision(aws_env, dynamodb=aws.dynamodb(), sqs=aws.sqs(), s3=aws.s3())
    catalog = aws.queue_url(get_queue("catalog").queue_name())
    aws.sqs().send_message(QueueUrl=catalog, MessageBody="a")
    aws.sqs().send_message(QueueUrl=catalog, MessageBody="b", DelaySeconds=60)
    aws.sqs().send_message(QueueUrl=aws.queue_url(get_queue("torrent").dlq_name()), MessageBody="dead")

    status, body = get_health()

    assert status == 200
    assert body["status"] == "ok" and body["version"] == __version__ and body["stage"] == aws_env.stage
    assert body["scheduler_enabled"] is True
    assert set(body["queues"]) == {q.name for q in QUEUES}
    assert body["queues"]["catalog"] == {"visible": 1, "in_flight": 0, "delayed": 1, "dlq": 0}
    assert body["queues"]["torrent"] == {"visible": 0, "in_flight": 0, "delayed": 0, "dlq": 1}


def test_health_is_503_naming_the_table_that_is_missing(aws_env: Settings) -> None:
    # Queues exist but the table does not: DynamoDB is the failing part.
    from infra.local.provision import ensure_queue

    for spec in QUEUES:
        ensure_queue(aws.sqs(), spec, aws_env)

    status, body = get_health()

    assert status == 503
    assert set(body["failing"]) == {"dynamodb"}
    assert aws_env.resource_name("jobs") in body["failing"]["dynamodb"]
    assert body["error"]["code"] == "unavailable" and "dynamodb" in body["error"]["message"]


def test_health_is_503_naming_dynamodb_and_sqs_when_the_endpoint_is_down(restore_environ: None) -> None:
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    os.environ["AWS_MAX_ATTEMPTS"] = "1"
    reset_settings()
    aws.reset()

    status, body = get_health()

    assert status == 503
    assert set(body["failing"]) == {"dynamodb", "sqs"}
    assert body["error"]["message"] == "cannot reach dynamodb, sqs"
    assert "Traceback" not in json.dumps(body)

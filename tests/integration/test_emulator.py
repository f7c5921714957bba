"""The embedded emulator's own behaviour where the local runtime changes moto's."""

from __future__ import annotations

from pathlib import Path

import boto3
from moto.backends import get_backend

from infra.local.emulator import Emulator


def client(emulator: Emulator, service: str) -> object:
    return boto3.client(
        service, endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )


def test_messages_past_their_retention_period_are_still_dropped(emulator: Emulator) -> None:
    sqs = client(emulator, "sqs")
    url = sqs.create_queue(QueueName="retention-check", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]  # type: ignore[attr-defined]
    sqs.send_message(QueueUrl=url, MessageBody="fresh")  # type: ignore[attr-defined]
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == ["fresh"]  # type: ignore[attr-defined]

    sqs.send_message(QueueUrl=url, MessageBody="old")  # type: ignore[attr-defined]
    queue = get_backend("sqs")["123456789012"]["us-east-1"].queues["retention-check"]
    old = next(m for m in queue._messages if m.body == "old")
    old.sent_timestamp -= 61_000  # sent 61 s ago, past the 60 s retention

    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])  # type: ignore[attr-defined]

    assert got == []


def test_a_snapshot_restores_into_a_fresh_backend(tmp_path: Path) -> None:
    first = Emulator(tmp_path, port=0, snapshot_every=0)
    first.start()
    sqs = client(first, "sqs")
    url = sqs.create_queue(QueueName="snapshot-check")["QueueUrl"]  # type: ignore[attr-defined]
    sqs.send_message(QueueUrl=url, MessageBody="kept")  # type: ignore[attr-defined]
    first.stop()
    get_backend("sqs").reset()  # forget everything in memory, as a new process would start

    second = Emulator(tmp_path, port=0, snapshot_every=0)
    second.start()
    try:
        sqs = client(second, "sqs")
        url = sqs.get_queue_url(QueueName="snapshot-check")["QueueUrl"]  # type: ignore[attr-defined]
        assert [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == ["kept"]  # type: ignore[attr-defined]
    finally:
        second.stop()

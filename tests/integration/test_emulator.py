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


def test_a_cancelled_transaction_leaves_every_item_as_it_was(emulator: Emulator) -> None:
    # The emulator backs up only the items a transaction touches (moto copies the whole table); a
    # cancelled transaction must still undo its earlier writes and keep every other item.
    ddb = client(emulator, "dynamodb")
    ddb.create_table(  # type: ignore[attr-defined]
        TableName="tx-check",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for n in range(3):
        ddb.put_item(TableName="tx-check", Item={"pk": {"S": "a"}, "sk": {"S": str(n)}, "v": {"N": str(n)}})  # type: ignore[attr-defined]

    def items() -> dict[str, object]:
        found = ddb.query(  # type: ignore[attr-defined]
            TableName="tx-check", KeyConditionExpression="pk = :a", ExpressionAttributeValues={":a": {"S": "a"}}
        )["Items"]
        return {i["sk"]["S"]: i.get("v") for i in found}

    before = items()
    cancelled = False
    try:
        ddb.transact_write_items(  # type: ignore[attr-defined]
            TransactItems=[
                {"Update": {"TableName": "tx-check", "Key": {"pk": {"S": "a"}, "sk": {"S": "0"}},
                            "UpdateExpression": "SET v = :x", "ExpressionAttributeValues": {":x": {"N": "99"}}}},
                {"Put": {"TableName": "tx-check", "Item": {"pk": {"S": "a"}, "sk": {"S": "new"}}}},
                {"Delete": {"TableName": "tx-check", "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}}},
                {"Update": {"TableName": "tx-check", "Key": {"pk": {"S": "a"}, "sk": {"S": "2"}},
                            "UpdateExpression": "SET v = :x", "ConditionExpression": "v = :wrong",
                            "ExpressionAttributeValues": {":x": {"N": "7"}, ":wrong": {"N": "-1"}}}},
            ]
        )  # fmt: skip
    except ddb.exceptions.TransactionCanceledException:  # type: ignore[attr-defined]
        cancelled = True

    assert cancelled
    assert items() == before

    ddb.transact_write_items(  # type: ignore[attr-defined]
        TransactItems=[{"Put": {"TableName": "tx-check", "Item": {"pk": {"S": "a"}, "sk": {"S": "new"}}}}]
    )
    assert set(items()) == {"0", "1", "2", "new"}

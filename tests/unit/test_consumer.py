"""The SQS consumer reports partial batch failures: one bad record never fails or replays its batch.

These tests dispatch without the job platform (`run_directly`), so a handler's exception fails its record.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.jobs.consumer import consume
from chalicelib.jobs.queues import get_queue
from chalicelib.jobs.registry import JobContext, Registry, job, registry
from tests.factories import envelope_body, run_directly, sqs_event, sqs_record


@pytest.fixture
def jobs() -> Iterator[Registry]:
    calls: list[Any] = []

    @job("test.maybe_fail", queue="catalog")
    def maybe_fail(ctx: JobContext, n: int, fail: bool = False) -> int:
        calls.append((ctx.envelope.id, n))
        if fail:
            raise RuntimeError(f"job {n} failed")
        return n

    registry.calls = calls  # type: ignore[attr-defined]
    yield registry
    registry.unregister("test.maybe_fail")


def failed_ids(response: dict[str, Any]) -> set[str]:
    return {f["itemIdentifier"] for f in response["batchItemFailures"]}


def test_a_batch_of_ten_with_three_failing_reports_exactly_those_three(jobs: Registry) -> None:
    event = sqs_event([envelope_body("test.maybe_fail", n=i, fail=i in (2, 5, 9)) for i in range(10)])

    response = consume(event, None, get_queue("catalog"), dispatcher=run_directly)

    expected = {r["messageId"] for i, r in enumerate(event["Records"]) if i in (2, 5, 9)}
    assert failed_ids(response) == expected
    assert sorted(n for _, n in jobs.calls) == list(range(10))  # type: ignore[attr-defined]


def test_a_batch_where_every_record_fails_reports_all_instead_of_raising(jobs: Registry) -> None:
    event = sqs_event([envelope_body("test.maybe_fail", n=i, fail=True) for i in range(3)])
    response = consume(event, None, get_queue("catalog"), dispatcher=run_directly)
    assert failed_ids(response) == {r["messageId"] for r in event["Records"]}


def test_a_record_that_is_not_an_envelope_goes_to_the_dlq_at_once_and_an_unknown_job_is_redelivered(
    jobs: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    good = sqs_record(envelope_body("test.maybe_fail", n=1))
    garbage = sqs_record("{not json", receive_count=3)
    unknown = sqs_record(envelope_body("test.no_such_job"))
    dead: list[str] = []

    response = consume(
        {"Records": [garbage, good, unknown]},
        None,
        get_queue("catalog"),
        dispatcher=run_directly,
        dead_letter=dead.append,
    )

    # Garbage can never run: dead-lettered now, and deleted from the queue (not reported failed). A job this
    # code does not know may be newer code's during a deploy: reported failed, so SQS delivers it again.
    assert dead == ["{not json"]
    assert failed_ids(response) == {unknown["messageId"]}
    assert [n for _, n in jobs.calls] == [1]  # type: ignore[attr-defined]
    rejected = {r.message_id: r.getMessage() for r in caplog.records if "rejected SQS record" in r.getMessage()}
    assert set(rejected) == {garbage["messageId"], unknown["messageId"]}
    assert "not JSON" in rejected[garbage["messageId"]] and "moved to the DLQ" in rejected[garbage["messageId"]]
    assert "unknown job 'test.no_such_job'" in rejected[unknown["messageId"]]


def test_a_fifo_queue_stops_at_the_first_failure_to_keep_group_order(jobs: Registry) -> None:
    import dataclasses

    fifo = dataclasses.replace(get_queue("catalog"), name="ordered", fifo=True)
    records = [sqs_record(envelope_body("test.maybe_fail", n=i, fail=i == 1)) for i in range(4)]
    for r in records:
        r["attributes"]["MessageGroupId"] = "g"
    response = consume({"Records": records}, None, fifo, dispatcher=run_directly)
    assert failed_ids(response) == {r["messageId"] for r in records[1:]}
    assert [n for _, n in jobs.calls] == [0, 1]  # type: ignore[attr-defined]


def test_the_job_handler_gets_its_envelope_and_remaining_time(jobs: Registry) -> None:
    seen: list[JobContext] = []

    @job("test.context", queue="maintenance")
    def context_job(ctx: JobContext) -> None:
        seen.append(ctx)

    class Ctx:
        def get_remaining_time_in_millis(self) -> int:
            return 4500

    try:
        body = envelope_body("test.context")
        consume(sqs_event([body]), Ctx(), get_queue("maintenance"), dispatcher=run_directly)
    finally:
        registry.unregister("test.context")
    assert seen[0].envelope.name == "test.context"
    assert seen[0].remaining_seconds() == 4.5

"""Delays longer than SQS's 15 minutes: the envelope is parked in DynamoDB, indexed by its due time, and a
periodic job (`jobs.release_delayed`, every minute) sends what is due. This works the same on AWS and under
`make run` (where EventBridge Scheduler's one-time schedules never fire), at the cost of up to a minute's
lateness on delays that are anyway longer than 15 minutes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from chalicelib.clock import utcnow
from chalicelib.jobs.envelope import Envelope
from chalicelib.models.jobs import JobItem

PARTITION = "DELAYED"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def park(envelopes: list[Envelope], *, due: float, queue_of: Callable[[Envelope], str]) -> None:
    due_at = datetime.fromtimestamp(due, UTC)
    with JobItem.batch_write() as batch:
        for envelope in envelopes:
            batch.save(
                JobItem(
                    f"DELAYED#{envelope.id}",
                    f"ATTEMPT#{envelope.attempt:04d}",
                    kind="delayed",
                    gsi2pk=PARTITION,
                    gsi2sk=f"{_iso(due_at)}#{envelope.id}#{envelope.attempt:04d}",
                    data={"queue": queue_of(envelope), "body": envelope.to_body()},
                    created_at=utcnow(),
                    expires_at=due_at + timedelta(days=14),  # a backstop only: released items are deleted
                )
            )


def release_due(send: Callable[[str, list[str]], None], now: datetime | None = None, limit: int = 500) -> int:
    """Send every parked envelope whose time has come; returns how many. Safe to run concurrently: a job
    sent twice is recognised by its run record and runs once."""
    now = now or utcnow()
    due = list(JobItem.by_gsi2.query(PARTITION, JobItem.gsi2sk <= _iso(now) + "~", limit=limit))
    by_queue: dict[str, list[JobItem]] = defaultdict(list)
    for item in due:
        by_queue[(item.data or {})["queue"]].append(item)
    for queue, items in by_queue.items():
        send(queue, [(i.data or {})["body"] for i in items])
        with JobItem.batch_write() as batch:
            for item in items:
                batch.delete(item)
    return len(due)


def parked_count() -> int:
    return JobItem.by_gsi2.count(PARTITION)

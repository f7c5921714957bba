"""Run records: one per attempt, with status, timings, error and result, kept 60 days.

Writing a run costs two requests: a conditional put when the attempt starts (which also recognises a
duplicate delivery of an attempt that already ran) and one transaction when it ends (the run's final state
plus the job name's counters, and the batch's when the job belongs to one), so counts are exact.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pynamodb.exceptions import PutError, TransactWriteError
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.clock import utcnow
from chalicelib.errors import ProjectionistError, ValidationError
from chalicelib.jobs.envelope import Envelope
from chalicelib.models.base import checked_start_key, connection
from chalicelib.models.jobs import JobItem

RUN_RETENTION = timedelta(days=60)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self is not JobStatus.RUNNING and self is not JobStatus.QUEUED


def run_key(job_id: str, attempt: int) -> tuple[str, str]:
    return f"JOB#{job_id}", f"RUN#{attempt:04d}"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _conditional_failed(exc: Exception) -> bool:
    code = getattr(exc, "cause_response_code", None)
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


StartOutcome = Literal["started", "duplicate", "busy"]


def start(envelope: Envelope, queue: str, owner: str, lease: float, now: datetime | None = None) -> StartOutcome:
    """Record that this attempt starts. `duplicate`: it already ran; `busy`: another delivery runs it now."""
    now = now or utcnow()
    pk, sk = run_key(envelope.id, envelope.attempt)
    item = JobItem(
        pk,
        sk,
        kind="run",
        status=JobStatus.RUNNING.value,
        owner=owner,
        gsi1pk=f"RUNS#{envelope.name}",
        gsi1sk=f"{_iso(now)}#{envelope.id}#{envelope.attempt:04d}",
        gsi2pk=f"RUNDAY#{now:%Y-%m-%d}",
        gsi2sk=f"{_iso(now)}#{envelope.id}#{envelope.attempt:04d}",
        created_at=now,
        updated_at=now,
        expires_at=now + RUN_RETENTION,
        data=_run_data(envelope, queue) | {"lease_until": (now + timedelta(seconds=lease)).isoformat()},
    )
    try:
        item.save(condition=JobItem.pk.does_not_exist())
        return "started"
    except PutError as exc:
        if not _conditional_failed(exc):
            raise
    existing = JobItem.get(pk, sk, consistent_read=True)
    if existing.status != JobStatus.RUNNING.value:
        return "duplicate"
    lease_until = datetime.fromisoformat((existing.data or {}).get("lease_until", now.isoformat()))
    if lease_until > now:
        return "busy"
    if _moved_on(pk, sk):
        # A later attempt exists: this one failed and sent its retry before its delivery died (the send comes
        # first, see dispatch), so this is a stale copy (e.g. redriven from the DLQ after its receive count ran
        # out); running it again would repeat a job that has moved on, or succeeded meanwhile.
        return "duplicate"
    # The earlier delivery died mid-run (its lease ran out): take the attempt over.
    data = dict(existing.data or {})
    data["lease_until"] = (now + timedelta(seconds=lease)).isoformat()
    try:
        existing.update(
            actions=[
                JobItem.owner.set(owner),
                JobItem.data.set(data),
                JobItem.updated_at.set(now),
                JobItem.takeovers.add(1),
            ],
            condition=(JobItem.owner == existing.owner) & (JobItem.status == JobStatus.RUNNING.value),
        )
        return "started"
    except Exception as exc:
        if _conditional_failed(exc):
            return "busy"
        raise


def _moved_on(pk: str, sk: str) -> bool:
    """Whether the job keyed `pk` has a run record of an attempt after the one keyed `sk`."""
    later = JobItem.query(pk, JobItem.sk.between(f"{sk}~", "RUN#~"), consistent_read=True, limit=1)
    return next(iter(later), None) is not None


def finish(
    envelope: Envelope,
    queue: str,
    owner: str,
    status: JobStatus,
    *,
    started_at: datetime,
    error: BaseException | None = None,
    result: Any = None,
    count_batch: bool = False,
    writes: Sequence[Callable[[TransactWrite], None]] = (),
    now: datetime | None = None,
) -> bool:
    """Record the attempt's end (and count it, and commit the job's own `writes`) in one transaction.
    False if another owner took the attempt over: then nothing of it is written."""
    now = now or utcnow()
    pk, sk = run_key(envelope.id, envelope.attempt)
    duration_ms = max(0, (now - started_at) // timedelta(milliseconds=1))
    data = _run_data(envelope, queue)
    data.update(started_at=started_at.isoformat(), ended_at=now.isoformat(), duration_ms=duration_ms)
    if error is not None:
        data["error_type"] = type(error).__name__
        data["error_message"] = str(error)[:1000]
    if result is not None:
        data["result"] = _summary(result)
    try:
        with TransactWrite(connection=connection()) as tx:
            tx.update(
                JobItem(pk, sk),
                actions=[
                    JobItem.status.set(status.value),
                    JobItem.updated_at.set(now),
                    JobItem.duration_ms.set(duration_ms),
                    JobItem.data.set(data),
                ],
                condition=(JobItem.owner == owner) & (JobItem.status == JobStatus.RUNNING.value),
            )
            counters: list[Action] = [JobItem.kind.set("stats"), JobItem.total.add(1)]
            if status is JobStatus.SUCCEEDED:
                counters.append(JobItem.succeeded.add(1))
            elif status is JobStatus.FAILED:
                counters.append(JobItem.failed.add(1))
            tx.update(JobItem(f"STATS#{envelope.name}", "TOTAL"), actions=counters)
            if count_batch and envelope.batch_id:
                progress: list[Action] = [JobItem.done.add(1)]
                progress.append(JobItem.succeeded.add(1) if status is JobStatus.SUCCEEDED else JobItem.failed.add(1))
                tx.update(JobItem(f"BATCH#{envelope.batch_id}", "BATCH"), actions=progress)
            for write in writes:
                write(tx)
    except TransactWriteError as exc:
        reasons = getattr(exc, "cancellation_reasons", None) or []
        first = reasons[0] if reasons else None
        if first is not None and getattr(first, "code", None) == "ConditionalCheckFailed":
            return False  # the run record's own condition: another delivery owns this attempt now
        if _conditional_failed(exc) and writes:
            raise JobWritesFailedError("the job's own transactional writes were refused") from exc
        if _conditional_failed(exc):
            return False
        raise
    return True


class JobWritesFailedError(ProjectionistError):
    """A job's transactional writes were refused (their condition failed): the job did not succeed."""

    code = "job_writes_failed"


def _run_data(envelope: Envelope, queue: str) -> dict[str, Any]:
    return {
        "name": envelope.name,
        "queue": queue,
        "attempt": envelope.attempt,
        "args": envelope.args,
        "correlation_id": envelope.correlation_id,
        "batch_id": envelope.batch_id,
        "enqueued_at": envelope.enqueued_at.isoformat(),
    }


def _summary(result: Any) -> Any:
    text = json.dumps(result, default=str)
    return result if len(text) <= 2000 else text[:2000] + "…"


def to_dict(item: JobItem) -> dict[str, Any]:
    data = dict(item.data or {})
    data.pop("lease_until", None)
    return {
        "job_id": item.pk.removeprefix("JOB#"),
        "attempt": int(item.sk.removeprefix("RUN#")),
        "status": item.status,
        "takeovers": int(item.takeovers or 0),
        **{k: v for k, v in data.items() if k != "attempt"},
        "started_at": data.get("started_at") or (item.created_at.isoformat() if item.created_at else None),
    }


def job_runs(job_id: str) -> list[dict[str, Any]]:
    """Every attempt of one job, oldest first."""
    return [to_dict(i) for i in JobItem.query(f"JOB#{job_id}", JobItem.sk.startswith("RUN#"), consistent_read=True)]


def _encode_cursor(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(value, dict):
            raise ValueError
        return value
    except ValueError:
        raise ValidationError("cursor is not one this API returned") from None


def list_runs(
    *,
    name: str | None = None,
    status: JobStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
    now: datetime | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Runs newest first, filtered by job name, status and start time, a page at a time."""
    now = now or utcnow()
    until = until or now
    if since is not None and since > until:
        raise ValidationError("since must be before until")
    oldest = now - RUN_RETENTION - timedelta(days=1)
    if until < oldest:
        return [], None  # before any run that is kept
    since = since or (until - RUN_RETENTION)
    # No run outlives its retention: the per-day partitions to read stay at most ~60, whatever the range.
    since, until = max(since, now - RUN_RETENTION - timedelta(days=1)), min(until, now + timedelta(days=1))
    if not 1 <= limit <= 500:
        raise ValidationError("limit must be 1..500")
    state = _decode_cursor(cursor) if cursor else {}
    low, high = _iso(since), _iso(until) + "~"
    condition_status = (JobItem.status == status.value) if status else None
    found: list[dict[str, Any]] = []
    partitions: list[tuple[Any, str, Any]]
    if name:
        partitions = [(JobItem.by_gsi1, f"RUNS#{name}", JobItem.gsi1sk)]
    else:
        days = []
        day = until.date()
        while day >= since.date():
            days.append(day)
            day -= timedelta(days=1)
        partitions = [(JobItem.by_gsi2, f"RUNDAY#{d:%Y-%m-%d}", JobItem.gsi2sk) for d in days]
    start_partition = state.get("p", 0)
    if not isinstance(start_partition, int) or isinstance(start_partition, bool) or start_partition < 0:
        raise ValidationError("cursor is not one this API returned", details={"field": "cursor"})
    names = {"pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"}
    last_key = checked_start_key(state.get("k"), names)
    for index in range(start_partition, len(partitions)):
        gsi, partition, sort_key = partitions[index]
        results = gsi.query(
            partition,
            sort_key.between(low, high),
            filter_condition=condition_status,
            scan_index_forward=False,
            limit=limit - len(found),
            last_evaluated_key=last_key if index == start_partition else None,
        )
        for item in results:
            found.append(to_dict(item))
            if len(found) == limit:
                key = results.last_evaluated_key
                if key is not None:
                    return found, _encode_cursor({"p": index, "k": key})
                if index + 1 < len(partitions):
                    return found, _encode_cursor({"p": index + 1, "k": None})
                return found, None
        last_key = None
    return found, None

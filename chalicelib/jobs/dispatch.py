"""Dispatch: envelope -> registry -> lock -> handler, with a run record per attempt.

    success  -> run succeeded, unique fingerprint released, continuation sent, batch progress counted
    failure  -> retry with backoff (a new attempt, delayed), or, after the last attempt or on a permanent
                error, run failed and the envelope sent to the queue's DLQ
    crash    -> nothing recorded as ended: SQS redelivers after the visibility timeout, the next delivery
                takes the attempt over once its lease ran out, and after maxReceiveCount SQS dead-letters it

Side effects that leave this module (retries, continuations, DLQ) are sent *before* the run is recorded as
ended, and carry ids derived from the job's, so a crash between the two repeats a send that the next run
record recognises, instead of losing it.
"""

from __future__ import annotations

import contextvars
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from chalicelib.clock import utcnow
from chalicelib.errors import ProjectionistError, ValidationError
from chalicelib.jobs import batches, enqueue, locks, runs, unique
from chalicelib.jobs.envelope import Envelope
from chalicelib.jobs.registry import JobContext, JobDefinition, Registry, registry
from chalicelib.jobs.runs import JobStatus
from chalicelib.observability import logger

Outcome = Literal["succeeded", "failed", "retrying", "skipped", "requeued", "duplicate"]

# Leave this much of the Lambda's remaining time (at most, and at most a tenth of it) for recording the
# outcome after a handler times out.
SAFETY_MARGIN = 2.0


class JobTimeoutError(ProjectionistError):
    code = "job_timeout"


class AttemptBusyError(ProjectionistError):
    """Another delivery of this attempt is running right now; try again after the visibility timeout."""

    code = "attempt_busy"


def derived_id(parent: str, what: str) -> str:
    """A stable id for a job another one sends, so a repeated send is recognised as the same job."""
    return uuid.uuid5(uuid.UUID(int=0), f"{parent}/{what}").hex


def _run_with_timeout(definition: JobDefinition, ctx: JobContext, args: dict[str, Any], timeout: float) -> Any:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = definition.handler(ctx, **args)
        except BaseException as exc:
            outcome["error"] = exc

    # The job's thread sees the caller's context variables, so its log lines carry the job's ids.
    worker = threading.Thread(
        target=contextvars.copy_context().run, args=(target,), name=f"job-{ctx.job_id}", daemon=True
    )
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise JobTimeoutError(f"job {definition.name} ran past its {timeout:.1f}s timeout")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def _timeout(definition: JobDefinition, lambda_context: Any) -> float:
    timeout = float(definition.timeout)
    getter = getattr(lambda_context, "get_remaining_time_in_millis", None)
    if getter is not None:
        remaining = getter() / 1000.0
        timeout = min(timeout, max(0.1, remaining - min(SAFETY_MARGIN, remaining / 10)))
    return timeout


def dispatch(
    envelope: Envelope, lambda_context: Any = None, *, jobs: Registry = registry, now: datetime | None = None
) -> Outcome:
    definition = jobs.get(envelope.name)
    owner = uuid.uuid4().hex
    timeout = _timeout(definition, lambda_context)
    try:
        args = definition.validate_args(envelope.args)
        lock_key = definition.lock.render(args) if definition.lock else None
    except ValidationError as error:  # permanent: recorded failed and dead-lettered at once, no retries
        started = now or utcnow()
        if runs.start(envelope, definition.queue, owner, lease=timeout, now=started) != "started":
            return "duplicate"
        return _failed(envelope, definition, owner, started, error, jobs)
    # The lock's lease is short and renewed while the job runs, so a holder that dies frees it within a lease,
    # not only after the job's whole timeout.
    lease = definition.lock.lease if definition.lock else 0.0

    if lock_key and definition.lock and not locks.acquire(lock_key, owner, lease):
        if definition.lock.when_held == "requeue":
            enqueue.send([envelope], delay=definition.lock.requeue_delay, jobs=jobs)
            logger.info("lock %s held: requeued in %ss", lock_key, definition.lock.requeue_delay)
            return "requeued"
        started = now or utcnow()
        if runs.start(envelope, definition.queue, owner, lease=timeout, now=started) != "started":
            return "duplicate"
        _finish(envelope, definition, owner, JobStatus.SKIPPED, started, error=None, result={"skipped": "lock held"})
        return "skipped"

    try:
        started = now or utcnow()
        outcome = runs.start(envelope, definition.queue, owner, lease=timeout + SAFETY_MARGIN, now=started)
        if outcome == "duplicate":
            logger.info("duplicate delivery of a finished attempt: skipped")
            return "duplicate"
        if outcome == "busy":
            raise AttemptBusyError(f"attempt {envelope.attempt} of job {envelope.id} is running elsewhere")
        _metric("JobStarted", envelope.name)
        _metric("QueueAge", envelope.name, (started - envelope.enqueued_at).total_seconds(), "Seconds")
        ctx = JobContext(envelope=envelope, lambda_context=lambda_context, previous_result=envelope.previous_result)
        renewer = locks.Renewer(lock_key, owner, lease) if lock_key else None
        try:
            result = _run_with_timeout(definition, ctx, args, timeout)
        except Exception as error:
            return _failed(envelope, definition, owner, started, error, jobs)
        finally:
            if renewer:
                renewer.stop()
        try:
            _succeeded(envelope, definition, owner, started, result, jobs, ctx.writes)
        except runs.JobWritesFailedError as error:
            return _failed(envelope, definition, owner, started, error, jobs)
        return "succeeded"
    finally:
        if lock_key:
            locks.release(lock_key, owner)


def _succeeded(
    envelope: Envelope,
    definition: JobDefinition,
    owner: str,
    started: datetime,
    result: Any,
    jobs: Registry,
    writes: list[Any],
) -> None:
    if envelope.then:
        first, rest = envelope.then[0], envelope.then[1:]
        follower = enqueue.build(
            first.name,
            first.args,
            correlation_id=envelope.correlation_id,
            then=rest,
            previous_result=result,
            jobs=jobs,
        ).model_copy(update={"id": derived_id(envelope.id, "then"), "chain_id": envelope.chain_id or envelope.id})
        enqueue.send([follower], jobs=jobs)
    _finish(envelope, definition, owner, JobStatus.SUCCEEDED, started, error=None, result=result, writes=writes)
    _metric("JobSucceeded", envelope.name)


def _failed(
    envelope: Envelope, definition: JobDefinition, owner: str, started: datetime, error: Exception, jobs: Registry
) -> Outcome:
    if definition.retry.should_retry(envelope.attempt, error):
        delay = definition.retry.delay_after(envelope.attempt, error)
        enqueue.send([envelope.next_attempt()], delay=delay, jobs=jobs)
        runs.finish(envelope, definition.queue, owner, JobStatus.RETRYING, started_at=started, error=error)
        logger.warning(
            "job failed, retrying in %.1fs: %s", delay, error, extra={"attempt": envelope.attempt, "delay": delay}
        )
        _metric("JobRetried", envelope.name)
        return "retrying"
    # The DLQ copy is the *next* attempt: redriven after a fix, it runs once more (this attempt's run record
    # is final, so a late duplicate of it is still recognised and skipped).
    enqueue.send_to_queue(definition.queue, [envelope.next_attempt().to_body()], dlq=True)
    _finish(envelope, definition, owner, JobStatus.FAILED, started, error=error, result=None)
    logger.error("job failed for good: %s", error, extra={"error_type": type(error).__name__})
    _metric("JobFailed", envelope.name)
    return "failed"


def _finish(
    envelope: Envelope,
    definition: JobDefinition,
    owner: str,
    status: JobStatus,
    started: datetime,
    *,
    error: Exception | None,
    result: Any,
    writes: list[Any] | None = None,
) -> None:
    """The job has ended for good: record it, count it, free its fingerprint, move its batch on."""
    recorded = runs.finish(
        envelope,
        definition.queue,
        owner,
        status,
        started_at=started,
        error=error,
        result=result,
        count_batch=True,
        writes=writes or (),
    )
    if not recorded:
        logger.warning("another delivery took this attempt over; its outcome stands")
        return
    _metric("JobDuration", envelope.name, (utcnow() - started).total_seconds() * 1000, "Milliseconds")
    if envelope.unique_key:
        unique.release(envelope.unique_key, envelope.id)
    if envelope.batch_id:
        batches.child_ended(envelope.batch_id)
    if envelope.task:
        from chalicelib.jobs import periodic

        ended = utcnow()
        periodic.record_run(
            envelope.task,
            {
                "job_id": envelope.id,
                "status": status.value,
                "started_at": started.isoformat(),
                "ended_at": ended.isoformat(),
                "duration_ms": (ended - started) // timedelta(milliseconds=1),
                "error": f"{type(error).__name__}: {error}" if error else None,
            },
        )


def _metric(name: str, job_name: str, value: float = 1, unit: str = "Count") -> None:
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    if not metrics_enabled():
        return
    with single_metric(name=name, unit=MetricUnit(unit), value=value, namespace="Projectionist") as metric:
        metric.add_dimension(name="job", value=job_name)


def metrics_enabled() -> bool:
    from chalicelib.settings import get_settings

    return get_settings().emit_metrics

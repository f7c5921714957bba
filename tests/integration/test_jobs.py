"""The job platform on the local runtime: retries, permanent failures, duplicates, unique jobs, locks,
continuations and batches, each against real queues and tables on the emulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib import aws
from chalicelib.errors import ValidationError
from chalicelib.jobs import batches, enqueue, runs
from chalicelib.jobs.dispatch import dispatch
from chalicelib.jobs.envelope import Envelope, JobRequest
from chalicelib.jobs.registry import JobContext, LockOn, UniqueFor, job
from chalicelib.jobs.retry import Retry
from chalicelib.jobs.runs import JobStatus
from infra.local.runtime import LocalRuntime
from tests.integration.platform_fixtures import Probe, fast, platform, wait_for

__all__ = ["platform"]

QUICK = Retry(max_attempts=4, base=0.5, cap=1.0)


def statuses(job_id: str) -> list[str]:
    return [r["status"] for r in runs.job_runs(job_id)]


def dlq_bodies(queue: str) -> list[str]:
    from chalicelib.jobs.queues import get_queue

    url = aws.queue_url(get_queue(queue).dlq_name())
    got = aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    return [m["Body"] for m in got]


def test_a_transient_failure_is_retried_until_it_succeeds(platform: Callable[..., LocalRuntime]) -> None:
    probe = Probe()

    @job("it.flaky", queue="catalog", retry=QUICK)
    def flaky(ctx: JobContext, fail_times: int) -> dict[str, int]:
        probe.record(ctx.attempt)
        if ctx.attempt <= fail_times:
            raise RuntimeError(f"attempt {ctx.attempt} fails")
        return {"attempt": ctx.attempt}

    platform(fast("catalog"))
    queued = enqueue.enqueue("it.flaky", {"fail_times": 2})

    wait_for(lambda: "succeeded" in statuses(queued.job_id), 20, "the third attempt to succeed")
    history = runs.job_runs(queued.job_id)
    assert [r["status"] for r in history] == ["retrying", "retrying", "succeeded"]
    assert history[0]["error_type"] == "RuntimeError" and history[0]["error_message"] == "attempt 1 fails"
    assert history[-1]["result"] == {"attempt": 3}
    assert probe.calls == [1, 2, 3]


def test_a_permanent_error_fails_at_once_into_the_dlq(platform: Callable[..., LocalRuntime]) -> None:
    @job("it.bad_input", queue="sources", retry=QUICK)
    def bad_input(ctx: JobContext, movie_id: int) -> None:
        raise ValidationError(f"movie {movie_id} has no title")

    platform(fast("sources"))
    queued = enqueue.enqueue("it.bad_input", {"movie_id": 7})

    wait_for(lambda: statuses(queued.job_id) == ["failed"], 15, "the job to fail")
    assert runs.job_runs(queued.job_id)[0]["error_message"] == "movie 7 has no title"
    assert [b for b in dlq_bodies("sources") if queued.job_id in b]


def test_the_last_attempt_marks_the_job_failed_and_dead_letters_it(platform: Callable[..., LocalRuntime]) -> None:
    @job("it.always_fails", queue="searches", retry=Retry(max_attempts=2, base=0.5, cap=0.5))
    def always_fails(ctx: JobContext) -> None:
        raise RuntimeError("never works")

    platform(fast("searches"))
    queued = enqueue.enqueue("it.always_fails")

    wait_for(lambda: statuses(queued.job_id) == ["retrying", "failed"], 20, "two attempts")
    assert [b for b in dlq_bodies("searches") if queued.job_id in b]


def test_invalid_arguments_and_unknown_jobs_fail_at_enqueue(platform: Callable[..., LocalRuntime]) -> None:
    @job("it.typed", queue="catalog")
    def typed(ctx: JobContext, show_id: int, force: bool = False) -> None:
        pass

    platform(fast("catalog"), run_pollers=False)
    with pytest.raises(ValidationError, match="show_id"):
        enqueue.enqueue("it.typed", {"show_id": "not a number"})
    with pytest.raises(ValidationError, match="surprise"):
        enqueue.enqueue("it.typed", {"show_id": 1, "surprise": True})
    from chalicelib.errors import UnknownJobError

    with pytest.raises(UnknownJobError):
        enqueue.enqueue("it.no_such_job")


def test_arguments_that_fail_validation_at_run_time_fail_at_once_into_the_dlq(
    platform: Callable[..., LocalRuntime],
) -> None:
    probe = Probe()

    @job("it.strict", queue="catalog", retry=QUICK)
    def strict(ctx: JobContext, show_id: int) -> None:
        probe.record(show_id)

    platform(fast("catalog"))
    # Sent past enqueue's validation, as an older version of the code might have sent it.
    envelope = Envelope(name="it.strict", args={"show_id": "not a number"})
    enqueue.send([envelope])

    wait_for(lambda: statuses(envelope.id) == ["failed"], 15, "the job to fail")
    run = runs.job_runs(envelope.id)[0]
    assert run["error_type"] == "ValidationError" and "show_id" in run["error_message"]
    assert [b for b in dlq_bodies("catalog") if envelope.id in b]
    assert probe.calls == []


def test_a_duplicate_delivery_of_a_finished_attempt_is_skipped(platform: Callable[..., LocalRuntime]) -> None:
    probe = Probe()

    @job("it.side_effect", queue="catalog")
    def side_effect(ctx: JobContext, n: int) -> None:
        probe.record(n)

    platform(fast("catalog"), run_pollers=False)
    envelope = enqueue.build("it.side_effect", {"n": 1})
    assert dispatch(envelope) == "succeeded"
    assert dispatch(envelope) == "duplicate"
    assert probe.calls == [1]
    assert statuses(envelope.id) == ["succeeded"]


def test_fifty_concurrent_enqueues_of_a_unique_job_send_one_message(platform: Callable[..., LocalRuntime]) -> None:
    gate = threading.Event()
    probe = Probe()

    @job("it.unique", queue="maintenance", unique=UniqueFor(hours=2))
    def unique_job(ctx: JobContext, show_id: int) -> None:
        probe.record(ctx.job_id)
        gate.wait(10)

    runtime = platform(fast("maintenance"), run_pollers=False)
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda _: enqueue.enqueue("it.unique", {"show_id": 1399}), range(50)))

    sent = [r for r in results if r.sent]
    assert len(sent) == 1
    assert {r.job_id for r in results} == {sent[0].job_id}  # every duplicate got the first job's id
    url = aws.queue_url(fast("maintenance").queue_name())
    attrs = aws.sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "1"

    # While it runs, a duplicate still sends nothing; once it has ended, a new enqueue sends.
    runtime.start_pollers()
    wait_for(lambda: len(probe.calls) == 1, 10, "the unique job to start")
    assert not enqueue.enqueue("it.unique", {"show_id": 1399}).sent
    assert enqueue.enqueue("it.unique", {"show_id": 1400}).sent  # other arguments, another fingerprint
    gate.set()
    wait_for(lambda: statuses(sent[0].job_id) == ["succeeded"], 10, "the unique job to end")
    again = enqueue.enqueue("it.unique", {"show_id": 1399})
    assert again.sent and again.job_id != sent[0].job_id


def test_jobs_on_one_lock_key_with_skip_never_overlap(platform: Callable[..., LocalRuntime]) -> None:
    probe = Probe()

    @job("it.locked_skip", queue="catalog", lock=LockOn("show:{show_id}", when_held="skip", lease=5))
    def locked(ctx: JobContext, show_id: int, n: int) -> None:
        with probe:
            probe.record(n)
            time.sleep(0.05)

    platform(fast("catalog", batch_size=1, max_concurrency=4))
    ids = [enqueue.enqueue("it.locked_skip", {"show_id": 1, "n": n}).job_id for n in range(20)]

    wait_for(lambda: all(statuses(i) and statuses(i)[-1] in ("succeeded", "skipped") for i in ids), 30, "all 20")
    final = [statuses(i)[-1] for i in ids]
    assert probe.max_running == 1  # measured inside the handler
    assert final.count("succeeded") == len(probe.calls) >= 1
    assert final.count("succeeded") + final.count("skipped") == 20


def test_jobs_on_one_lock_key_with_requeue_all_run_one_at_a_time(platform: Callable[..., LocalRuntime]) -> None:
    probe = Probe()

    @job("it.locked_requeue", queue="catalog", lock=LockOn("list:{name}", when_held="requeue", requeue_delay=1))
    def locked(ctx: JobContext, name: str, n: int) -> None:
        with probe:
            probe.record(n)
            time.sleep(0.05)

    platform(fast("catalog", batch_size=1, max_concurrency=4))
    ids = [enqueue.enqueue("it.locked_requeue", {"name": "popular", "n": n}).job_id for n in range(20)]

    wait_for(lambda: sorted(probe.calls) == list(range(20)), 60, "every requeued job to run")
    assert probe.max_running == 1
    wait_for(lambda: all(statuses(i) == ["succeeded"] for i in ids), 10, "run records")


def test_a_lock_is_renewed_while_its_job_runs_past_the_lease(platform: Callable[..., LocalRuntime]) -> None:
    started = threading.Event()

    @job("it.long_locked", queue="catalog", lock=LockOn("show:{show_id}", when_held="skip", lease=1))
    def long_locked(ctx: JobContext, show_id: int, sleep: float) -> None:
        started.set()
        time.sleep(sleep)

    platform(fast("catalog"), run_pollers=False)
    long_job = enqueue.build("it.long_locked", {"show_id": 1, "sleep": 3.5})
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(dispatch(long_job)))
    runner.start()
    assert started.wait(5)
    time.sleep(2.0)  # twice the lease: only renewal keeps the lock held now

    assert dispatch(enqueue.build("it.long_locked", {"show_id": 1, "sleep": 0})) == "skipped"
    runner.join(10)
    assert outcome == ["succeeded"]
    assert dispatch(enqueue.build("it.long_locked", {"show_id": 1, "sleep": 0})) == "succeeded"  # released


def test_a_lock_whose_holder_died_is_free_once_its_lease_ends(platform: Callable[..., LocalRuntime]) -> None:
    from chalicelib.jobs import locks

    @job("it.after_crash", queue="catalog", lock=LockOn("show:{show_id}", when_held="skip", lease=1))
    def after_crash(ctx: JobContext, show_id: int) -> None:
        pass

    platform(fast("catalog"), run_pollers=False)
    lease = 4  # long enough that the first dispatch comes within it even on a loaded machine (a CI run's 1 s did not)
    assert locks.acquire("show:9", "a-worker-that-dies", lease=lease)  # ... and never renews nor releases
    ends = time.monotonic() + lease

    assert dispatch(enqueue.build("it.after_crash", {"show_id": 9})) == "skipped"
    time.sleep(max(0.0, ends - time.monotonic()) + 0.2)
    assert dispatch(enqueue.build("it.after_crash", {"show_id": 9})) == "succeeded"


def test_a_batch_of_100_runs_its_continuation_once_after_the_last_child(platform: Callable[..., LocalRuntime]) -> None:
    ended: list[float] = []
    continuation: list[tuple[float, Any]] = []

    @job("it.child", queue="sources", retry=QUICK)
    def child(ctx: JobContext, n: int) -> None:
        if n % 10 == 0 and ctx.attempt == 1:
            raise RuntimeError("first try fails")  # some children finish only on a retry
        ended.append(time.monotonic())

    @job("it.after_batch", queue="maintenance")
    def after_batch(ctx: JobContext, label: str) -> None:
        continuation.append((time.monotonic(), ctx.previous_result))

    platform(fast("sources", max_concurrency=8), fast("maintenance"))
    batch_id = batches.enqueue_batch(
        [JobRequest(name="it.child", args={"n": n}) for n in range(100)],
        then=JobRequest(name="it.after_batch", args={"label": "done"}),
    )

    wait_for(lambda: len(continuation) == 1, 60, "the continuation")
    time.sleep(1.0)  # a second run would show up here
    assert len(continuation) == 1
    assert len(ended) == 100
    assert continuation[0][0] > max(ended)
    assert continuation[0][1] == {"batch_id": batch_id, "succeeded": 100, "failed": 0}
    summary = batches.get(batch_id)
    assert summary | {"created_at": None, "updated_at": None} == {
        "batch_id": batch_id,
        "status": "succeeded",
        "total": 100,
        "done": 100,
        "succeeded": 100,
        "failed": 0,
        "pending": 0,
        "created_at": None,
        "updated_at": None,
        "then": {"name": "it.after_batch", "args": {"label": "done"}},
    }


def test_then_runs_the_next_job_with_the_first_ones_result(platform: Callable[..., LocalRuntime]) -> None:
    seen: list[Any] = []

    @job("it.first", queue="catalog")
    def first(ctx: JobContext, x: int) -> int:
        return x * 2

    @job("it.second", queue="catalog")
    def second(ctx: JobContext, y: int) -> int:
        seen.append((ctx.previous_result, y, ctx.envelope.correlation_id))
        return ctx.previous_result + y

    platform(fast("catalog"))
    queued = enqueue.enqueue("it.first", {"x": 21}, then=[JobRequest(name="it.second", args={"y": 1})])

    wait_for(lambda: len(seen) == 1, 15, "the continuation")
    previous, y, correlation = seen[0]
    assert (previous, y) == (42, 1)
    first_run = runs.job_runs(queued.job_id)[0]
    assert correlation == first_run["correlation_id"]


def test_a_plain_job_costs_two_dynamodb_writes(platform: Callable[..., LocalRuntime]) -> None:
    @job("it.plain", queue="catalog")
    def plain(ctx: JobContext) -> None:
        pass

    runtime = platform(fast("catalog"), run_pollers=False)
    assert runtime.emulator is not None
    envelope = enqueue.build("it.plain")
    before = runtime.emulator.requests.copy()

    assert dispatch(envelope) == "succeeded"

    served = runtime.emulator.requests - before
    writes = {op: n for (service, op), n in served.items() if service == "DynamoDB" and op in WRITE_OPERATIONS}
    assert writes == {"PutItem": 1, "TransactWriteItems": 1}  # run started; run ended + counted, atomically
    assert [r["status"] for r in runs.job_runs(envelope.id)] == [JobStatus.SUCCEEDED.value]


WRITE_OPERATIONS = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


def test_a_jobs_transactional_writes_commit_once_and_only_on_success(platform: Callable[..., LocalRuntime]) -> None:
    from chalicelib.models.jobs import JobItem

    @job("it.effect", queue="catalog", retry=QUICK)
    def effect(ctx: JobContext, n: int, fail: bool = False) -> None:
        ctx.add_write(lambda tx: tx.update(JobItem("IT", f"EFFECT#{n}"), actions=[JobItem.total.add(1)]))
        if fail:
            raise RuntimeError("fails after adding its write")

    platform(fast("catalog"), run_pollers=False)
    ok = enqueue.build("it.effect", {"n": 1})
    assert dispatch(ok) == "succeeded"
    assert dispatch(ok) == "duplicate"
    assert JobItem.get("IT", "EFFECT#1", consistent_read=True).total == 1

    failing = enqueue.build("it.effect", {"n": 2, "fail": True})
    assert dispatch(failing) == "retrying"
    with pytest.raises(JobItem.DoesNotExist):
        JobItem.get("IT", "EFFECT#2", consistent_read=True)

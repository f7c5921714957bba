"""Upkeep of the job platform: long delays parked and released, housekeeping of expired items, and run
statistics, each against real queues and tables on the emulator, with time injected through `now=`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import aws
from chalicelib.clock import utcnow
from chalicelib.jobs import batches, delays, enqueue, locks, periodic, runs, stats, tasks, unique
from chalicelib.jobs.envelope import Envelope, JobRequest
from chalicelib.jobs.registry import JobContext, job
from chalicelib.jobs.runs import JobStatus
from chalicelib.models.jobs import JobItem
from infra.local.runtime import LocalRuntime
from tests.integration.platform_fixtures import Probe, fast, platform, wait_for

__all__ = ["platform", "tasks"]  # importing tasks registers platform.release_delayed before the fixture runs

# Noon, so that "a few minutes/hours before NOW" never crosses midnight into another day's partition.
NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)


def statuses(job_id: str) -> list[str]:
    return [r["status"] for r in runs.job_runs(job_id)]


def queue_counts(queue: str) -> dict[str, str]:
    url = aws.queue_url(fast(queue).queue_name())
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesDelayed",
        "ApproximateNumberOfMessagesNotVisible",
    ]
    return dict(aws.sqs().get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"])


def received_ids(queue: str) -> list[str]:
    url = aws.queue_url(fast(queue).queue_name())
    got = aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    return [Envelope.parse(m["Body"]).id for m in got]


def exists(pk: str, sk: str) -> bool:
    try:
        JobItem.get(pk, sk, consistent_read=True)
        return True
    except JobItem.DoesNotExist:
        return False


def record_run(name: str, start: datetime, ms: int | None, status: JobStatus = JobStatus.SUCCEEDED) -> Envelope:
    """One attempt of `name` started at `start`, and ended `ms` milliseconds later (None: still running)."""
    envelope = enqueue.build(name)
    assert runs.start(envelope, "catalog", "owner", lease=60, now=start) == "started"
    if ms is not None:
        end = start + timedelta(milliseconds=ms)
        assert runs.finish(envelope, "catalog", "owner", status, started_at=start, now=end)
    return envelope


# -- long and short delays ---------------------------------------------------------------------------------


def test_a_long_delay_is_parked_and_released_only_when_due(platform: Callable[..., LocalRuntime]) -> None:
    @job("it.later", queue="catalog")
    def later(ctx: JobContext, n: int) -> None:
        pass

    platform(fast("catalog"), run_pollers=False)
    start = utcnow()
    queued = enqueue.enqueue("it.later", {"n": 1}, delay=1800, now=start)

    assert queued.sent
    assert queue_counts("catalog") == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesDelayed": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }
    assert delays.parked_count() == 1

    sent: list[tuple[str, list[str]]] = []

    def send(queue: str, bodies: list[str]) -> None:
        sent.append((queue, bodies))
        enqueue.send_to_queue(queue, bodies)

    assert delays.release_due(send, now=start + timedelta(minutes=29)) == 0
    assert sent == [] and delays.parked_count() == 1

    assert delays.release_due(send, now=start + timedelta(minutes=30)) == 1
    assert [(queue, [Envelope.parse(b).id for b in bodies]) for queue, bodies in sent] == [("catalog", [queued.job_id])]
    assert Envelope.parse(sent[0][1][0]).args == {"n": 1}
    assert delays.parked_count() == 0
    assert received_ids("catalog") == [queued.job_id]

    assert delays.release_due(send, now=start + timedelta(hours=2)) == 0
    assert len(sent) == 1


def test_the_periodic_release_job_runs_a_parked_job_that_is_due(platform: Callable[..., LocalRuntime]) -> None:
    probe = Probe()

    @job("it.parked", queue="catalog")
    def parked(ctx: JobContext) -> None:
        probe.record(ctx.job_id)

    platform(fast("catalog"), fast("maintenance"))
    queued = enqueue.enqueue("it.parked", delay=1800, now=utcnow() - timedelta(hours=1))  # due 30 minutes ago
    assert delays.parked_count() == 1
    assert statuses(queued.job_id) == []

    outcome, release_id = periodic.fire("platform.release_delayed", manual=True)

    assert outcome == "enqueued" and release_id is not None
    wait_for(lambda: statuses(queued.job_id) == ["succeeded"], 20, "the parked job to run")
    assert probe.calls == [queued.job_id]
    assert delays.parked_count() == 0
    # The released job can finish before the release job has written its own run's end.
    wait_for(lambda: runs.job_runs(release_id)[0].get("status") == "succeeded", 10, "the release run to end")
    assert runs.job_runs(release_id)[0]["result"] == {"released": 1}


def test_a_short_delay_rides_on_sqs_and_runs_only_after_it(platform: Callable[..., LocalRuntime]) -> None:
    ran_at: list[float] = []

    @job("it.soon", queue="catalog")
    def soon(ctx: JobContext) -> None:
        ran_at.append(time.monotonic())

    platform(fast("catalog"))
    enqueued_at = time.monotonic()
    queued = enqueue.enqueue("it.soon", delay=2)

    assert delays.parked_count() == 0
    time.sleep(1.0)
    assert ran_at == [] and statuses(queued.job_id) == []
    wait_for(lambda: statuses(queued.job_id) == ["succeeded"], 10, "the delayed job to run")
    assert len(ran_at) == 1 and ran_at[0] - enqueued_at >= 1.5


# -- housekeeping ------------------------------------------------------------------------------------------


def test_housekeeping_deletes_exactly_the_expired_items_and_is_idempotent(
    platform: Callable[..., LocalRuntime],
) -> None:
    @job("it.kept", queue="catalog")
    def kept(ctx: JobContext) -> None:
        pass

    platform(fast("catalog"), run_pollers=False)
    old_run = record_run("it.kept", NOW - timedelta(days=61), 1000)  # expired a day ago
    live_run = record_run("it.kept", NOW - timedelta(days=60) + timedelta(hours=1), 1000)  # a swept day, not expired
    recent_run = record_run("it.kept", NOW - timedelta(days=1), 1000)
    assert unique.claim("fp-old", "job-a", ttl=60, now=NOW - timedelta(days=1)) is None
    assert unique.claim("fp-live", "job-b", ttl=3600, now=NOW - timedelta(minutes=10)) is None
    assert locks.acquire("lock-old", "owner-a", lease=60, now=NOW - timedelta(hours=2))
    assert locks.acquire("lock-live", "owner-b", lease=600, now=NOW - timedelta(minutes=1))
    children = [JobRequest(name="it.kept")]
    old_batch, _ = batches.start(children, now=NOW - timedelta(days=61))
    live_batch, _ = batches.start(children, now=NOW - timedelta(days=60) + timedelta(hours=1))
    expired = [
        runs.run_key(old_run.id, 1),
        ("UNIQUE#fp-old", "UNIQUE"),
        ("LOCK#lock-old", "LOCK"),
        (f"BATCH#{old_batch}", "BATCH"),
    ]
    live = [
        runs.run_key(live_run.id, 1),
        runs.run_key(recent_run.id, 1),
        ("UNIQUE#fp-live", "UNIQUE"),
        ("LOCK#lock-live", "LOCK"),
        (f"BATCH#{live_batch}", "BATCH"),
        ("STATS#it.kept", "TOTAL"),
    ]
    assert all(exists(*key) for key in expired + live)

    assert tasks.sweep(now=NOW) == {"runs": 1, "expiring": 3}

    assert [key for key in expired if exists(*key)] == []
    assert [key for key in live if not exists(*key)] == []
    assert tasks.sweep(now=NOW) == {"runs": 0, "expiring": 0}
    assert [key for key in live if not exists(*key)] == []


def test_an_expired_fingerprint_or_lock_is_free_before_any_sweep(platform: Callable[..., LocalRuntime]) -> None:
    platform(fast("catalog"), run_pollers=False)
    taken = NOW - timedelta(hours=2)

    assert unique.claim("fp", "job-a", ttl=60, now=taken) is None
    assert unique.holder("fp", now=taken + timedelta(seconds=30)) == "job-a"
    assert unique.claim("fp", "job-b", ttl=60, now=taken + timedelta(seconds=30)) == "job-a"
    assert unique.holder("fp", now=NOW) is None
    assert unique.claim("fp", "job-b", ttl=60, now=NOW) is None
    assert unique.holder("fp", now=NOW) == "job-b"

    assert locks.acquire("lk", "owner-a", lease=60, now=taken)
    assert not locks.acquire("lk", "owner-b", lease=60, now=taken + timedelta(seconds=30))
    assert locks.acquire("lk", "owner-b", lease=60, now=NOW)
    assert not locks.acquire("lk", "owner-a", lease=60, now=NOW + timedelta(seconds=1))
    assert JobItem.get("LOCK#lk", "LOCK", consistent_read=True).owner == "owner-b"


# -- statistics --------------------------------------------------------------------------------------------


@pytest.fixture
def stats_task() -> Iterator[str]:
    name = "it.upkeep_stats"
    periodic.TASKS[name] = periodic.PeriodicTask(name, "rate(1 hour)", "a task for the stats test")
    try:
        yield name
    finally:
        periodic.TASKS.pop(name, None)


def test_stats_report_a_tasks_runs_success_rate_and_percentiles_in_the_window(
    platform: Callable[..., LocalRuntime], stats_task: str
) -> None:
    @job(stats_task, queue="catalog")
    def counted(ctx: JobContext) -> None:
        pass

    platform(fast("catalog"), run_pollers=False)
    for n, ms in enumerate([100, 200, 300, 400, 500, 600, 700, 800]):
        record_run(stats_task, NOW - timedelta(minutes=60 - n), ms)
    record_run(stats_task, NOW - timedelta(minutes=30), 50, JobStatus.FAILED)
    record_run(stats_task, NOW - timedelta(minutes=20), 5000, JobStatus.FAILED)
    record_run(stats_task, NOW - timedelta(minutes=15), 10, JobStatus.RETRYING)  # ended, but not for good
    record_run(stats_task, NOW - timedelta(minutes=5), None)  # still running
    record_run(stats_task, NOW - timedelta(hours=6, minutes=1), 9000)  # before the window

    report = stats.collect(now=NOW, window_hours=6)

    # Durations of the 10 runs that ended for good, sorted: 50, 100..800, 5000. Inclusive (linear)
    # percentiles over 10 values: p50 at position 4.5 -> (400 + 500) / 2; p95 at 8.55 -> 800 + 0.55 * 4200.
    assert report["per_task"][stats_task] == {"runs": 10, "success_rate": 0.8, "p50_ms": 450.0, "p95_ms": 3110.0}
    assert report["runs"] == {"total": 12, "succeeded": 9, "failed": 2, "in_window": 12}
    assert report["window_hours"] == 6

    wider = stats.collect(now=NOW, window_hours=7)  # now the earlier run counts too
    assert wider["per_task"][stats_task]["runs"] == 11
    assert wider["per_task"][stats_task]["success_rate"] == round(9 / 11, 4)
    assert wider["runs"]["in_window"] == 13

    quiet = stats.collect(now=NOW + timedelta(days=2), window_hours=1)
    assert quiet["per_task"][stats_task] == {"runs": 0, "success_rate": None, "p50_ms": None, "p95_ms": None}


def test_a_runs_duration_is_recorded_to_the_millisecond(platform: Callable[..., LocalRuntime]) -> None:
    @job("it.timed", queue="catalog")
    def timed(ctx: JobContext) -> None:
        pass

    platform(fast("catalog"), run_pollers=False)
    envelope = record_run("it.timed", NOW - timedelta(minutes=1), 1001)

    recorded = runs.job_runs(envelope.id)[0]["duration_ms"]
    assert recorded == 1001, (
        f"a run lasting exactly 1001 ms is recorded as {recorded} ms: runs.finish computes "
        "int((now - started_at).total_seconds() * 1000), and 1.001 * 1000 == 1000.9999999999999"
    )


def test_a_dead_attempt_is_taken_over_unless_the_job_has_moved_on(platform: Callable[..., LocalRuntime]) -> None:
    """A delivery whose worker died mid-run is taken over by the next one once its lease ran out; but if a later
    attempt exists, the dead one had failed and sent its retry, and a stale copy of it (redriven from the DLQ
    after SQS's receive count ran out) must not run again: the chaos test once saw a job's effect twice."""

    @job("it.stale", queue="catalog")
    def stale(ctx: JobContext) -> None:
        pass

    platform(fast("catalog"), run_pollers=False)
    start = NOW - timedelta(minutes=1)
    lone = enqueue.build("it.stale")
    assert runs.start(lone, "catalog", "dead worker", lease=1, now=start) == "started"
    assert runs.start(lone, "catalog", "next delivery", lease=60, now=NOW) == "started"  # taken over

    first = enqueue.build("it.stale")
    assert runs.start(first, "catalog", "dead worker", lease=1, now=start) == "started"
    assert runs.start(first.next_attempt(), "catalog", "retry", lease=60, now=start) == "started"
    assert runs.start(first, "catalog", "redriven copy", lease=60, now=NOW) == "duplicate"
    assert [r["attempt"] for r in runs.job_runs(first.id)] == [1, 2]

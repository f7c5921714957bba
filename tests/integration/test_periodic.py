"""Periodic tasks: fired by the ticker on an injected clock, never overlapping, switched off by a toggle."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from chalice import Chalice

from chalicelib.jobs import periodic, runs, tasks
from chalicelib.jobs.periodic import periodic as periodic_task
from chalicelib.jobs.registry import JobContext, job
from infra.local.runtime import LocalRuntime
from infra.local.schedules import Ticker, schedules_from_app
from tests.integration.platform_fixtures import Probe, fast, platform, wait_for

__all__ = ["platform", "tasks"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def slow_task() -> Iterator[tuple[Probe, threading.Event]]:
    probe, gate = Probe(), threading.Event()

    @periodic_task("it.every_minute", schedule="rate(1 minute)", description="a task slower than its interval")
    @job("it.every_minute", queue="maintenance")
    def every_minute(ctx: JobContext) -> None:
        with probe:
            probe.record(ctx.job_id)
            gate.wait(20)

    yield probe, gate
    gate.set()
    periodic.TASKS.pop("it.every_minute", None)


def ticker_for(task: str, clock: Clock) -> Ticker:
    app = Chalice(app_name="ticker-test")
    periodic.register_schedules(app)
    schedules = [s for s in schedules_from_app(app) if s.name == periodic.get_task(task).handler_name]
    return Ticker(schedules, clock=clock)


def test_a_task_that_outlasts_its_interval_does_not_overlap_itself(
    platform: Callable[..., LocalRuntime], slow_task: tuple[Probe, threading.Event]
) -> None:
    probe, gate = slow_task
    platform(fast("maintenance"))
    clock = Clock()
    ticker = ticker_for("it.every_minute", clock)

    clock.now += timedelta(minutes=1)
    assert ticker.tick() == ["task_it_every_minute"]
    wait_for(lambda: probe.running == 1, 10, "the first run to start")
    for _ in range(3):  # three more ticks while the first run is still going
        clock.now += timedelta(minutes=1)
        ticker.tick()
    assert len(probe.calls) == 1

    gate.set()
    wait_for(lambda: (periodic.describe("it.every_minute")["last_run"] or {}).get("status") == "succeeded", 10, "end")
    assert probe.max_running == 1 and len(probe.calls) == 1
    last = periodic.describe("it.every_minute")["last_run"]
    assert last["job_id"] == probe.calls[0] and last["duration_ms"] >= 0 and last["error"] is None

    clock.now += timedelta(minutes=1)  # the next tick after it ended runs again
    ticker.tick()
    wait_for(lambda: len(probe.calls) == 2, 10, "the next run")


def test_toggling_a_task_off_stops_its_runs_and_on_resumes_them(
    platform: Callable[..., LocalRuntime], slow_task: tuple[Probe, threading.Event]
) -> None:
    _probe, gate = slow_task
    gate.set()
    platform(fast("maintenance"), run_pollers=False)

    assert periodic.set_enabled("it.every_minute") is False
    assert periodic.fire("it.every_minute") == ("disabled", None)
    assert periodic.describe("it.every_minute")["enabled"] is False

    assert periodic.set_enabled("it.every_minute", True) is True
    outcome, job_id = periodic.fire("it.every_minute")
    assert outcome == "enqueued" and job_id
    assert periodic.fire("it.every_minute") == ("already_running", job_id)


def test_enable_scheduler_false_stops_every_task_at_once(
    platform: Callable[..., LocalRuntime], slow_task: tuple[Probe, threading.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform(fast("maintenance"), run_pollers=False)
    from chalicelib.settings import reset_settings

    monkeypatch.setenv("ENABLE_SCHEDULER", "false")
    reset_settings()
    assert {periodic.fire(name)[0] for name in periodic.TASKS} == {"scheduler_off"}
    # a manual run from the admin API still works
    assert periodic.fire("it.every_minute", manual=True)[0] == "enqueued"


def test_next_run_follows_the_schedule(
    platform: Callable[..., LocalRuntime], slow_task: tuple[Probe, threading.Event]
) -> None:
    platform(fast("maintenance"), run_pollers=False)
    now = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    periodic.fire("platform.housekeeping", now=now)
    assert periodic.describe("platform.housekeeping")["next_run"] == "2026-11-23T03:30:00+00:00"
    assert runs.JobStatus.SKIPPED.final

"""EventBridge schedule expressions and the local ticker, driven by an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalice import Chalice, Cron, Rate

from chalicelib.jobs.schedule import ScheduleExpression, ScheduleExpressionError
from infra.local.schedules import Ticker, schedules_from_app

T0 = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)  # a Monday


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def app_with_schedules() -> tuple[Chalice, list[dict[str, Any]], list[dict[str, Any]]]:
    app = Chalice(app_name="schedule-test")
    every_minute: list[dict[str, Any]] = []
    weekdays_noon: list[dict[str, Any]] = []

    @app.schedule(Rate(1, unit=Rate.MINUTES))
    def tick_every_minute(event: Any) -> None:
        every_minute.append(event.to_dict())

    @app.schedule("cron(0 12 ? * MON-FRI *)")
    def noon_on_weekdays(event: Any) -> None:
        weekdays_noon.append(event.to_dict())

    return app, every_minute, weekdays_noon


def test_a_rate_one_minute_schedule_fires_when_the_clock_passes_a_minute() -> None:
    app, every_minute, _ = app_with_schedules()
    clock = FakeClock(T0)
    ticker = Ticker(schedules_from_app(app), clock=clock)

    clock.advance(seconds=59)
    assert ticker.tick() == [] and every_minute == []

    clock.advance(seconds=1)
    assert ticker.tick() == ["tick_every_minute"]
    assert len(every_minute) == 1
    assert every_minute[0]["detail-type"] == "Scheduled Event"
    assert every_minute[0]["source"] == "aws.events"
    assert every_minute[0]["time"] == "2026-11-23T10:01:30Z"

    assert ticker.tick() == []  # the same minute does not fire twice


def test_missed_ticks_coalesce_into_one_run() -> None:
    app, every_minute, _ = app_with_schedules()
    clock = FakeClock(T0)
    ticker = Ticker(schedules_from_app(app), clock=clock)
    clock.advance(minutes=10, seconds=5)
    ticker.tick()
    ticker.tick()
    assert len(every_minute) == 1
    clock.advance(seconds=55)  # 11 minutes after start: the next slot
    ticker.tick()
    assert len(every_minute) == 2


def test_a_cron_schedule_fires_at_its_time_in_utc_and_skips_weekends() -> None:
    app, _, noon = app_with_schedules()
    clock = FakeClock(T0)
    ticker = Ticker(schedules_from_app(app), clock=clock)
    clock.now = datetime(2026, 11, 23, 11, 59, 59, tzinfo=UTC)
    ticker.tick()
    assert noon == []
    clock.now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    ticker.tick()
    assert len(noon) == 1
    schedule = next(s for s in ticker.schedules if s.name == "noon_on_weekdays")
    assert schedule.next_due == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    clock.now = datetime(2026, 11, 27, 12, 0, 1, tzinfo=UTC)  # Friday
    ticker.tick()
    assert schedule.next_due == datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # Monday, not Saturday


def test_a_failing_scheduled_handler_does_not_stop_the_ticker() -> None:
    app = Chalice(app_name="failing")
    calls = []

    @app.schedule("rate(1 minute)")
    def broken(event: Any) -> None:
        calls.append(1)
        raise RuntimeError("boom")

    clock = FakeClock(T0)
    ticker = Ticker(schedules_from_app(app), clock=clock)
    for _ in range(3):
        clock.advance(minutes=1)
        ticker.tick()
    assert len(calls) == 3


@pytest.mark.parametrize(
    "expression, after, expected",
    [
        ("rate(5 minutes)", T0, T0 + timedelta(minutes=5)),
        ("rate(1 hour)", T0, T0 + timedelta(hours=1)),
        ("rate(2 days)", T0, T0 + timedelta(days=2)),
        ("cron(15 10 * * ? *)", T0, datetime(2026, 11, 23, 10, 15, tzinfo=UTC)),
        ("cron(0 8 1 * ? *)", T0, datetime(2026, 12, 1, 8, 0, tzinfo=UTC)),
        # EventBridge numbers weekdays from SUN=1: 2 is Monday, so the next one is a week on.
        ("cron(0 9 ? * 2 *)", T0, datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),
        ("cron(0 9 ? * 6#1 *)", T0, datetime(2026, 12, 4, 9, 0, tzinfo=UTC)),  # first Friday
        ("cron(0 0 1 1 ? 2028)", T0, datetime(2028, 1, 1, 0, 0, tzinfo=UTC)),
    ],
)
def test_expressions_fire_when_eventbridge_would(expression: str, after: datetime, expected: datetime) -> None:
    assert ScheduleExpression.parse(expression).next_after(after, started=after) == expected


def test_chalice_cron_objects_are_understood() -> None:
    text = Cron(0, 3, "*", "*", "?", "*").to_string()
    assert ScheduleExpression.parse(text).next_after(T0) == datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "expression",
    [
        "rate(0 minutes)",
        "rate(1 minutes)",
        "rate(5 minute)",
        "rate(5 weeks)",
        "cron(0 12 * * * *)",  # both day fields set
        "cron(0 12 ? * ? *)",  # neither
        "cron(0 12 * *)",
        "cron(0 12 ? * 8 *)",
        "every minute",
    ],
)
def test_invalid_expressions_are_refused_with_a_reason(expression: str) -> None:
    with pytest.raises(ScheduleExpressionError):
        ScheduleExpression.parse(expression)

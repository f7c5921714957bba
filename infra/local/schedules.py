"""The local ticker: fires every `@app.schedule` of the Chalice app when EventBridge would (UTC).

The schedules come from the Chalice app's registered event sources, not from a second list. Missed ticks
coalesce: a schedule that is late fires once and then waits for its next time after now.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.clock import utcnow
from chalicelib.jobs.schedule import ScheduleExpression

log = logging.getLogger("projectionist.local.schedules")

Clock = Callable[[], datetime]


@dataclass
class Schedule:
    name: str
    expression: ScheduleExpression
    handler: Callable[[dict[str, Any], Any], Any]
    next_due: datetime | None = None
    started: datetime | None = None
    fired: int = 0


@dataclass
class Ticker:
    """Fires each schedule when the clock passes its next due time. `tick()` is one step; `run()` loops."""

    schedules: list[Schedule]
    clock: Clock = utcnow
    submit: Callable[[Callable[[], Any]], Any] = field(default=lambda fn: fn())
    region: str = "us-east-1"
    account: str = "123456789012"

    def __post_init__(self) -> None:
        now = self.clock()
        for schedule in self.schedules:
            schedule.started = now
            schedule.next_due = schedule.expression.next_after(now, started=now)

    def tick(self) -> list[str]:
        now = self.clock()
        fired = []
        for schedule in self.schedules:
            assert schedule.next_due is not None
            if now < schedule.next_due:
                continue
            event = self._event(schedule, schedule.next_due)
            # Coalesce missed ticks: fire once, then wait for the first due time after now.
            schedule.next_due = schedule.expression.next_after(now, started=schedule.started)
            schedule.fired += 1
            fired.append(schedule.name)
            self.submit(functools.partial(self._invoke, schedule, event))
        return fired

    def _invoke(self, schedule: Schedule, event: dict[str, Any]) -> None:
        try:
            schedule.handler(event, None)
        except Exception:
            log.exception("scheduled handler %s failed", schedule.name)

    def _event(self, schedule: Schedule, due: datetime) -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account,
            "time": due.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [f"arn:aws:events:{self.region}:{self.account}:rule/{schedule.name}"],
            "detail": {},
        }

    def run(self, stop: threading.Event, every: float = 1.0) -> None:
        while not stop.wait(every):
            self.tick()


def schedules_from_app(app: Any) -> list[Schedule]:
    """Every `@app.schedule` registered on the Chalice app, with its handler."""
    from chalice.app import ScheduledEventConfig

    found = []
    for source in app.event_sources:
        if isinstance(source, ScheduledEventConfig):
            expression = source.schedule_expression
            text = expression if isinstance(expression, str) else expression.to_string()
            found.append(Schedule(source.name, ScheduleExpression.parse(text), app.handler_map[source.name]))
    return found

"""Periodic tasks: a registry of tasks, each deployed as a Chalice `@app.schedule` that only enqueues.

    @periodic("maintenance.housekeeping", schedule="cron(30 3 * * ? *)", description="...")
    @job("maintenance.housekeeping", queue="maintenance")
    def housekeeping(ctx): ...

A task's state lives in DynamoDB: its enabled flag (a toggle takes effect at the next tick, no redeploy),
its last run (start, end, status, duration, error) and its next run. A task never overlaps itself: each
run holds the fingerprint `task:<name>` from enqueue until it ends, so a tick that finds the previous run
still queued or running does nothing, and missed ticks coalesce into one run. `ENABLE_SCHEDULER=false`
stops every task at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pynamodb.exceptions import UpdateError
from pynamodb.expressions.update import Action

from chalicelib.clock import utcnow
from chalicelib.errors import NotFoundError
from chalicelib.jobs import enqueue
from chalicelib.jobs.registry import Registry, registry
from chalicelib.jobs.schedule import ScheduleExpression
from chalicelib.models.jobs import JobItem
from chalicelib.settings import get_settings


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    schedule: str
    description: str = ""
    enabled_by_default: bool = True
    args: tuple[tuple[str, Any], ...] = ()
    # How long a run may hold the task's no-overlap fingerprint before it is presumed dead.
    max_runtime: float = 6 * 3600

    @property
    def expression(self) -> ScheduleExpression:
        return ScheduleExpression.parse(self.schedule)

    @property
    def handler_name(self) -> str:
        return "task_" + re.sub(r"[^a-z0-9]+", "_", self.name.lower())

    @property
    def fingerprint(self) -> str:
        return f"task:{self.name}"


TASKS: dict[str, PeriodicTask] = {}


def periodic(
    name: str,
    *,
    schedule: str,
    description: str = "",
    enabled: bool = True,
    args: dict[str, Any] | None = None,
    max_runtime: float = 6 * 3600,
) -> Any:
    """Register the job of the same name as a periodic task (stack it on top of `@job`)."""
    ScheduleExpression.parse(schedule)  # a bad expression fails at import, not at deploy

    def decorate(handler: Any) -> Any:
        TASKS[name] = PeriodicTask(
            name, schedule, description, enabled, tuple(sorted((args or {}).items())), max_runtime
        )
        return handler

    return decorate


def get_task(name: str) -> PeriodicTask:
    try:
        return TASKS[name]
    except KeyError:
        raise NotFoundError(f"no periodic task {name!r}") from None


def _key(name: str) -> tuple[str, str]:
    return f"TASK#{name}", "TASK"


def _state(name: str) -> JobItem | None:
    try:
        return JobItem.get(*_key(name), consistent_read=True)
    except JobItem.DoesNotExist:
        return None


def is_enabled(task: PeriodicTask, item: JobItem | None = None) -> bool:
    item = item if item is not None else _state(task.name)
    if item is None or item.status is None:
        return task.enabled_by_default
    return item.status == "enabled"


FireOutcome = Literal["enqueued", "already_running", "disabled", "scheduler_off"]


def fire(
    name: str, *, manual: bool = False, jobs: Registry = registry, now: datetime | None = None
) -> tuple[FireOutcome, str | None]:
    """One tick of a task (or a manual run): enqueue its job unless it is off or still running."""
    now = now or utcnow()
    task = get_task(name)
    if not manual:
        if not get_settings().enable_scheduler:
            return "scheduler_off", None
        if not is_enabled(task):
            return "disabled", None
    envelope = enqueue.build(name, dict(task.args), jobs=jobs).model_copy(
        update={"task": name, "unique_key": task.fingerprint}
    )
    result = enqueue.enqueue_envelopes([envelope], jobs=jobs, unique_ttl=task.max_runtime, now=now)[0]
    _update(name, data_updates={"next_run": task.expression.next_after(now, started=now).isoformat()}, now=now)
    return ("enqueued" if result.sent else "already_running"), result.job_id


def set_enabled(name: str, enabled: bool | None = None, now: datetime | None = None) -> bool:
    """Turn a task on or off (`None` flips it). Returns the new state."""
    task = get_task(name)
    new_state = (not is_enabled(task)) if enabled is None else enabled
    _update(name, status="enabled" if new_state else "disabled", now=now)
    return new_state


def record_run(name: str, run: dict[str, Any], now: datetime | None = None) -> None:
    """Called when a task's job ends: keep its last run on the task."""
    _update(name, data_updates={"last_run": run}, now=now)


def _update(
    name: str, *, status: str | None = None, data_updates: dict[str, Any] | None = None, now: datetime | None = None
) -> None:
    now = now or utcnow()
    for _ in range(5):  # data is one JSON attribute: read, merge, write if unchanged since
        item = _state(name)
        version = item.updated_at if item is not None else None
        data = dict((item.data if item is not None else None) or {})
        data.update(data_updates or {})
        actions: list[Action] = [JobItem.kind.set("task"), JobItem.data.set(data), JobItem.updated_at.set(now)]
        if status is not None:
            actions.append(JobItem.status.set(status))
        condition = JobItem.updated_at == version if version is not None else JobItem.pk.does_not_exist()
        try:
            JobItem(*_key(name)).update(actions=actions, condition=condition)
            return
        except UpdateError as exc:
            if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
            now = max(now, utcnow()) + timedelta(microseconds=1)


def describe(name: str, now: datetime | None = None) -> dict[str, Any]:
    task = get_task(name)
    item = _state(name)
    data = dict((item.data if item is not None else None) or {})
    now = now or utcnow()
    next_run = data.get("next_run") or task.expression.next_after(now, started=now).isoformat()
    return {
        "name": task.name,
        "schedule": task.schedule,
        "description": task.description,
        "enabled": is_enabled(task, item),
        "last_run": data.get("last_run"),
        "next_run": next_run,
    }


def register_schedules(app: Any, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """One `@app.schedule` per task, whose handler only enqueues the task's job."""
    registered = {}
    for task in TASKS.values():

        def handler(event: Any, _name: str = task.name) -> dict[str, Any]:
            outcome, job_id = fire(_name)
            return {"task": _name, "outcome": outcome, "job_id": job_id}

        handler.__name__ = handler.__qualname__ = task.handler_name
        registered[task.handler_name] = app.schedule(
            task.schedule, name=task.handler_name, description=task.description[:512] or task.name
        )(handler)
    if namespace is not None:
        namespace.update(registered)
    return registered

"""Run statistics from counters and indexed queries, never from a scan of all runs."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from typing import Any

from chalicelib.clock import utcnow
from chalicelib.jobs import periodic
from chalicelib.jobs.registry import Registry, registry
from chalicelib.models.jobs import JobItem


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def window_runs(name: str, since: datetime, until: datetime) -> list[JobItem]:
    return list(JobItem.by_gsi1.query(f"RUNS#{name}", JobItem.gsi1sk.between(_iso(since), _iso(until) + "~")))


def collect(*, window_hours: float = 24, jobs: Registry = registry, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    since = now - timedelta(hours=window_hours)
    names = jobs.names()
    totals = {"total": 0, "succeeded": 0, "failed": 0}
    keys = [(f"STATS#{name}", "TOTAL") for name in names]
    for item in JobItem.batch_get(keys):
        totals["total"] += int(item.total or 0)
        totals["succeeded"] += int(item.succeeded or 0)
        totals["failed"] += int(item.failed or 0)
    in_window = 0
    day = since.date()
    while day <= now.date():
        in_window += JobItem.by_gsi2.count(
            f"RUNDAY#{day:%Y-%m-%d}", JobItem.gsi2sk.between(_iso(since), _iso(now) + "~")
        )
        day += timedelta(days=1)
    per_task = {}
    tasks = periodic.TASKS
    for name in sorted(tasks):
        ended = [r for r in window_runs(name, since, now) if r.status in ("succeeded", "failed")]
        durations = sorted(float(r.duration_ms) for r in ended if r.duration_ms is not None)
        succeeded = sum(1 for r in ended if r.status == "succeeded")
        per_task[name] = {
            "runs": len(ended),
            "success_rate": round(succeeded / len(ended), 4) if ended else None,
            "p50_ms": _percentile(durations, 50),
            "p95_ms": _percentile(durations, 95),
        }
    enabled = sum(1 for name in tasks if periodic.is_enabled(tasks[name]))
    return {
        "window_hours": window_hours,
        "tasks": {"total": len(tasks), "enabled": enabled},
        "runs": totals | {"in_window": in_window},
        "per_task": per_task,
    }

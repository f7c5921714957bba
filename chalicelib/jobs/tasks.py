"""The platform's own periodic tasks: releasing long-delayed jobs, and nightly housekeeping."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import DeleteError

from chalicelib.clock import utcnow
from chalicelib.jobs import delays, enqueue
from chalicelib.jobs.periodic import periodic
from chalicelib.jobs.registry import JobContext, job
from chalicelib.jobs.runs import RUN_RETENTION
from chalicelib.models.jobs import JobItem

# How far back housekeeping looks for expired items, beyond which DynamoDB's TTL has long done its work.
LOOKBACK_DAYS = 30


@periodic("platform.release_delayed", schedule="rate(1 minute)", description="Send jobs whose long delay is over")
@job("platform.release_delayed", queue="maintenance", timeout=120)
def release_delayed(ctx: JobContext) -> dict[str, int]:
    return {"released": delays.release_due(lambda queue, bodies: enqueue.send_to_queue(queue, bodies))}


def _expired_in(partition: str, now: datetime) -> int:
    deleted = 0
    for item in JobItem.by_gsi2.query(partition, filter_condition=JobItem.expires_at <= now):
        try:
            item.delete(condition=JobItem.expires_at <= now)  # renewed since the read? then it stays
            deleted += 1
        except DeleteError as exc:
            if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
    return deleted


def sweep(now: datetime | None = None, budget: Any = None) -> dict[str, int]:
    """Delete expired runs, fingerprints, locks and batches, found by index (never by a table scan)."""
    now = now or utcnow()
    counts = {"runs": 0, "expiring": 0}
    oldest_run_day = (now - RUN_RETENTION).date()
    for back in range(LOOKBACK_DAYS + 1):
        if budget is not None and budget() < 5:
            break
        day = oldest_run_day - timedelta(days=back)
        counts["runs"] += _expired_in(f"RUNDAY#{day:%Y-%m-%d}", now)
        expiry_day = now.date() - timedelta(days=back)
        counts["expiring"] += _expired_in(f"EXPIRES#{expiry_day:%Y-%m-%d}", now)
    return counts


@periodic(
    "platform.housekeeping",
    schedule="cron(30 3 * * ? *)",
    description="Delete runs, fingerprints, locks and batches past their TTL (a backstop for TTL's lag)",
)
@job("platform.housekeeping", queue="maintenance", timeout=900)
def housekeeping(ctx: JobContext) -> dict[str, int]:
    def budget() -> float:
        remaining = ctx.remaining_seconds()
        return remaining if remaining is not None else 1e9

    return sweep(budget=budget)

"""One-time data migrations: dated classes registered in code, run after deploy as jobs.

    @migration
    class BackfillX(Migration):
        id = "2026-11-22_backfill_x"
        description = "..."
        def run(self, ctx: JobContext) -> dict: ...

A table item per migration tracks running -> succeeded/failed with timestamps and error. A succeeded
migration never runs again; two concurrent starts run it once (a conditional claim with a lease); a failed
one can be retried from the admin API. Migrations move data; table schemas belong to the models and infra.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pynamodb.exceptions import UpdateError

from chalicelib.clock import utcnow
from chalicelib.errors import ConflictError, NotFoundError
from chalicelib.jobs import enqueue
from chalicelib.jobs.registry import JobContext, job
from chalicelib.jobs.retry import Retry
from chalicelib.models.jobs import JobItem

_ID = re.compile(r"^\d{4}-\d{2}-\d{2}_[a-z0-9_]+$")
LEASE = timedelta(minutes=15)


class Migration:
    id: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def run(self, ctx: JobContext) -> Any:
        raise NotImplementedError


MIGRATIONS: dict[str, type[Migration]] = {}


def migration(cls: type[Migration]) -> type[Migration]:
    if not _ID.match(cls.id):
        raise ValueError(f"migration id {cls.id!r} must look like '2026-11-22_backfill_x'")
    if cls.id in MIGRATIONS and MIGRATIONS[cls.id] is not cls:
        raise ValueError(f"migration {cls.id} is registered twice")
    MIGRATIONS[cls.id] = cls
    return cls


def _key(migration_id: str) -> tuple[str, str]:
    return f"MIGRATION#{migration_id}", "MIGRATION"


def _item(migration_id: str) -> JobItem | None:
    try:
        return JobItem.get(*_key(migration_id), consistent_read=True)
    except JobItem.DoesNotExist:
        return None


def _conditional_failed(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def claim(migration_id: str, owner: str, now: datetime | None = None) -> bool:
    """Mark the migration running for `owner`, unless it succeeded or another run holds a live lease."""
    now = now or utcnow()
    free = (
        JobItem.pk.does_not_exist()
        | JobItem.status.is_in("pending", "failed")
        | ((JobItem.status == "running") & (JobItem.lease_until <= now))
    )
    try:
        JobItem(*_key(migration_id)).update(
            actions=[
                JobItem.kind.set("migration"),
                JobItem.status.set("running"),
                JobItem.owner.set(owner),
                JobItem.created_at.set(now),
                JobItem.updated_at.set(now),
                JobItem.lease_until.set(now + LEASE),
                JobItem.data.set({"started_at": now.isoformat()}),
            ],
            condition=free,
        )
        return True
    except UpdateError as exc:
        if _conditional_failed(exc):
            return False
        raise


def _end(migration_id: str, owner: str, status: str, data: dict[str, Any], now: datetime | None = None) -> None:
    now = now or utcnow()
    JobItem(*_key(migration_id)).update(
        actions=[
            JobItem.status.set(status),
            JobItem.updated_at.set(now),
            JobItem.lease_until.remove(),
            JobItem.data.set(data | {"ended_at": now.isoformat()}),
        ],
        condition=JobItem.owner == owner,
    )


@job("platform.run_migration", queue="maintenance", retry=Retry(max_attempts=1))
def run_migration(ctx: JobContext, migration_id: str) -> dict[str, Any]:
    cls = MIGRATIONS.get(migration_id)
    if cls is None:
        raise NotFoundError(f"no migration {migration_id!r} in this version of the code")
    owner = ctx.job_id
    if not claim(migration_id, owner):
        return {"migration_id": migration_id, "outcome": "not run: succeeded before or running elsewhere"}
    started = utcnow()
    try:
        result = cls().run(ctx)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        _end(migration_id, owner, "failed", {"started_at": started.isoformat(), "error": error})
        raise
    _end(migration_id, owner, "succeeded", {"started_at": started.isoformat(), "result": result})
    return {"migration_id": migration_id, "outcome": "succeeded"}


def start_pending(now: datetime | None = None) -> list[str]:
    """Enqueue every migration never run, or whose run died (lease out), oldest first. Run after each deploy
    and on local start; failed ones wait for a retry from the admin API."""
    now = now or utcnow()
    pending = []
    for migration_id in sorted(MIGRATIONS):
        item = _item(migration_id)
        if item is None or (item.status == "running" and item.lease_until is not None and item.lease_until <= now):
            pending.append(migration_id)
    for migration_id in pending:
        enqueue.enqueue("platform.run_migration", {"migration_id": migration_id})
    return pending


def status(migration_id: str) -> str:
    item = _item(migration_id)
    return (item.status if item is not None else None) or "pending"


def retry(migration_id: str) -> str:
    """Run a failed migration again (admin API)."""
    if migration_id not in MIGRATIONS:
        raise NotFoundError(f"no migration {migration_id!r}")
    current = status(migration_id)
    if current != "failed":
        raise ConflictError(f"migration {migration_id} is {current}, not failed")
    return enqueue.enqueue("platform.run_migration", {"migration_id": migration_id}).job_id


def list_all() -> list[dict[str, Any]]:
    rows = []
    for migration_id in sorted(MIGRATIONS):
        item = _item(migration_id)
        data = dict((item.data if item is not None else None) or {})
        rows.append(
            {
                "id": migration_id,
                "description": MIGRATIONS[migration_id].description,
                "status": item.status if item is not None else "pending",
                "started_at": data.get("started_at"),
                "ended_at": data.get("ended_at"),
                "error": data.get("error"),
                "result": data.get("result"),
            }
        )
    return rows

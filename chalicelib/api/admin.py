"""The admin API for the job platform: tasks, runs, stats, jobs, batches, queues and migrations.

Every route needs an admin's access token (the guard checks it; the static ADMIN_TOKEN until an admin exists).
Lists that grow are paginated
with an opaque `cursor`; bad parameters are a 400, unknown names a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chalice import Blueprint

from chalicelib.auth import guard
from chalicelib.errors import ForbiddenError, NotFoundError, ValidationError
from chalicelib.health import queue_depth
from chalicelib.jobs import batches, migrations, periodic, redrive, runs, stats
from chalicelib.jobs.queues import QUEUES, get_queue
from chalicelib.jobs.runs import JobStatus

bp = Blueprint(__name__)


def require_admin(request: Any = None) -> None:
    """Admin only. The guard (chalicelib/auth/guard.py) has checked already; this holds even if it had not."""
    request = request if request is not None else bp.current_request
    if not guard.current(request).is_admin:
        raise ForbiddenError("this needs an admin")


def _query() -> dict[str, str]:
    return dict(bp.current_request.query_params or {})


def _body() -> dict[str, Any]:
    body = bp.current_request.json_body if bp.current_request.raw_body else None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body


def _int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be {low}..{high}")
    return value


def _time(params: dict[str, str], name: str) -> datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{name} must be an ISO 8601 time, e.g. 2026-11-23T10:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@bp.route("/admin/tasks", methods=["GET"])
def list_tasks() -> dict[str, Any]:
    require_admin()
    return {"tasks": [periodic.describe(name) for name in sorted(periodic.TASKS)]}


@bp.route("/admin/tasks/{name}/toggle", methods=["POST"])
def toggle_task(name: str) -> dict[str, Any]:
    require_admin()
    body = _body()
    enabled = body.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise ValidationError("enabled must be true or false")
    periodic.set_enabled(name, enabled)
    return periodic.describe(name)


@bp.route("/admin/tasks/{name}/run", methods=["POST"])
def run_task(name: str) -> dict[str, Any]:
    require_admin()
    outcome, job_id = periodic.fire(name, manual=True)
    return {"task": name, "outcome": outcome, "job_id": job_id}


@bp.route("/admin/runs", methods=["GET"])
def list_runs() -> dict[str, Any]:
    require_admin()
    params = _query()
    status = params.get("status")
    try:
        status_filter = JobStatus(status) if status else None
    except ValueError:
        raise ValidationError(f"status must be one of {', '.join(s.value for s in JobStatus)}") from None
    items, cursor = runs.list_runs(
        name=params.get("name") or params.get("task"),
        status=status_filter,
        since=_time(params, "since"),
        until=_time(params, "until"),
        limit=_int(params, "limit", 50, 1, 500),
        cursor=params.get("cursor"),
    )
    return {"runs": items, "next_cursor": cursor}


@bp.route("/admin/stats", methods=["GET"])
def get_stats() -> dict[str, Any]:
    require_admin()
    return stats.collect(window_hours=_int(_query(), "window_hours", 24, 1, 24 * 60))


@bp.route("/admin/jobs/{job_id}", methods=["GET"])
def get_job(job_id: str) -> dict[str, Any]:
    if len(job_id) > 128:
        raise NotFoundError(f"no job {job_id[:40]!r}...")
    require_admin()
    attempts = runs.job_runs(job_id)
    if not attempts:
        raise NotFoundError(f"no runs of job {job_id!r} (queued jobs appear once they start)")
    return {"job_id": job_id, "name": attempts[-1]["name"], "status": attempts[-1]["status"], "runs": attempts}


@bp.route("/admin/batches/{batch_id}", methods=["GET"])
def get_batch(batch_id: str) -> dict[str, Any]:
    if len(batch_id) > 128:
        raise NotFoundError(f"no batch {batch_id[:40]!r}...")
    require_admin()
    return batches.get(batch_id)


@bp.route("/admin/queues", methods=["GET"])
def list_queues() -> dict[str, Any]:
    require_admin()
    return {"queues": {spec.name: queue_depth(spec) for spec in QUEUES}}


@bp.route("/admin/queues/{name}/redrive", methods=["POST"])
def redrive_queue(name: str) -> dict[str, Any]:
    require_admin()
    try:
        spec = get_queue(name)
    except KeyError:
        raise NotFoundError(f"no queue {name!r}") from None
    return {"queue": name, **redrive.redrive(spec)}


@bp.route("/admin/migrations", methods=["GET"])
def list_migrations() -> dict[str, Any]:
    require_admin()
    return {"migrations": migrations.list_all()}


@bp.route("/admin/migrations/{migration_id}/retry", methods=["POST"])
def retry_migration(migration_id: str) -> dict[str, Any]:
    require_admin()
    return {"migration_id": migration_id, "job_id": migrations.retry(migration_id)}

"""The Chalice app: blueprints, schedules and SQS consumers. Wiring only; the logic lives in chalicelib/."""

from __future__ import annotations

from typing import Any

from chalice import Chalice

from chalicelib.api.admin import bp as admin_bp
from chalicelib.api.auth import bp as auth_bp
from chalicelib.api.catalog import bp as catalog_bp
from chalicelib.api.health import bp as health_bp
from chalicelib.api.sources import bp as sources_bp
from chalicelib.auth import guard
from chalicelib.auth.audit import audit_request
from chalicelib.catalog import jobs as catalog_jobs  # noqa: F401  (registers the catalog's jobs and tasks)
from chalicelib.errors import normalize_response, to_response
from chalicelib.jobs import migrations, tasks  # noqa: F401  (registers the platform's jobs and tasks)
from chalicelib.jobs.consumer import register_consumers
from chalicelib.jobs.periodic import register_schedules
from chalicelib.observability import logger
from chalicelib.sources import health as sources_health  # noqa: F401  (the stats planner, the scrape job)
from chalicelib.sources import jobs as sources_jobs  # noqa: F401  (registers the sources' jobs and tasks)
from chalicelib.streams.api import bp as streams_bp

app = Chalice(app_name="projectionist")
app.register_blueprint(health_bp)
app.register_blueprint(admin_bp)
app.register_blueprint(auth_bp)
app.register_blueprint(catalog_bp)
app.register_blueprint(sources_bp)
app.register_blueprint(streams_bp)


@app.middleware("http")
def errors_as_json(event: Any, get_response: Any) -> Any:
    """The one place where an exception becomes an HTTP response: JSON body, never a stack trace."""
    try:
        return normalize_response(get_response(event))
    except Exception as exc:
        response = to_response(exc)
        if response.status_code >= 500:
            logger.exception("request failed", extra={"path": getattr(event, "path", None)})
        return response


@app.middleware("http")
def guard_requests(event: Any, get_response: Any) -> Any:
    """Inside the one above: every request passes the guard (sign-in, roles, body size) before its handler, and
    admin and feed changes are audited with their outcome."""
    principal = guard.check(event)
    if principal is None or not guard.audited(event):
        return get_response(event)
    try:
        response = get_response(event)
    except Exception as exc:
        audit_request(event, principal, to_response(exc).status_code)
        raise
    audit_request(event, principal, response.status_code)
    return response


# One consumer per Lambda-consumed queue, from the queue specs: consume_catalog, consume_sources, ...
register_consumers(app, namespace=globals())
# One EventBridge schedule per periodic task, whose handler only enqueues the task's job.
register_schedules(app, namespace=globals())


@app.lambda_function(name="run_migrations")
def run_migrations(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Invoked by the stack after each deploy (and by the local runtime on start)."""
    return {"enqueued": migrations.start_pending()}

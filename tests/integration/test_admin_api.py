"""The admin API over HTTP (Chalice's test client on the real app), against the emulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chalice.test import Client

import app as app_module
from chalicelib import aws
from chalicelib.jobs import batches, enqueue, migrations
from chalicelib.jobs.dispatch import dispatch
from chalicelib.jobs.envelope import JobRequest
from chalicelib.jobs.migrations import Migration, migration
from chalicelib.jobs.queues import QUEUES, get_queue
from chalicelib.jobs.registry import JobContext, job
from chalicelib.jobs.retry import Retry
from infra.local.runtime import LocalRuntime
from tests.integration.platform_fixtures import fast, platform, wait_for

__all__ = ["platform"]

TOKEN = {"Authorization": "Bearer local-admin-token"}


@pytest.fixture
def api(platform: Callable[..., LocalRuntime]) -> Iterator[Callable[..., tuple[int, Any]]]:
    platform(*(fast(q.name) for q in QUEUES), run_pollers=False)

    with Client(app_module.app) as client:

        def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
            hdrs = dict(TOKEN if headers is None else headers)
            kwargs: dict[str, Any] = {"headers": hdrs}
            if body is not None:
                hdrs["Content-Type"] = "application/json"
                kwargs["body"] = body if isinstance(body, (bytes, str)) else json.dumps(body)
            response = getattr(client.http, method.lower())(path, **kwargs)
            return response.status_code, json.loads(response.body) if response.body else None

        yield call


def test_every_admin_route_needs_the_token(api: Callable[..., tuple[int, Any]]) -> None:
    for method, path in [("GET", "/admin/tasks"), ("GET", "/admin/runs"), ("POST", "/admin/queues/catalog/redrive")]:
        status, body = api(method, path, headers={})
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, _ = api(method, path, headers={"Authorization": "Bearer wrong"})
        assert status == 401


def test_tasks_list_toggle_and_run(api: Callable[..., tuple[int, Any]]) -> None:
    status, body = api("GET", "/admin/tasks")
    assert status == 200
    names = {t["name"]: t for t in body["tasks"]}
    assert {"platform.housekeeping", "platform.release_delayed"} <= set(names)
    housekeeping = names["platform.housekeeping"]
    assert housekeeping["schedule"] == "cron(30 3 * * ? *)" and housekeeping["enabled"]

    status, body = api("POST", "/admin/tasks/platform.housekeeping/toggle")
    assert status == 200 and body["enabled"] is False
    status, body = api("POST", "/admin/tasks/platform.housekeeping/toggle", {"enabled": True})
    assert status == 200 and body["enabled"] is True

    status, body = api("POST", "/admin/tasks/platform.housekeeping/run")
    assert status == 200 and body["outcome"] == "enqueued" and body["job_id"]
    status, again = api("POST", "/admin/tasks/platform.housekeeping/run")
    assert again["outcome"] == "already_running" and again["job_id"] == body["job_id"]


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("POST", "/admin/tasks/no.such_task/run", None, 404, "not_found"),
        ("POST", "/admin/tasks/no.such_task/toggle", None, 404, "not_found"),
        ("POST", "/admin/tasks/platform.housekeeping/toggle", b"{not json", 400, "bad_request"),
        ("POST", "/admin/tasks/platform.housekeeping/toggle", [1, 2], 400, "invalid_request"),
        ("POST", "/admin/tasks/platform.housekeeping/toggle", {"enabled": "yes"}, 400, "invalid_request"),
        ("GET", "/admin/jobs/nope", None, 404, "not_found"),
        ("GET", "/admin/batches/nope", None, 404, "not_found"),
        ("POST", "/admin/queues/nope/redrive", None, 404, "not_found"),
        ("POST", "/admin/migrations/2000-01-01_nope/retry", None, 404, "not_found"),
        ("GET", "/admin/runs?status=weird", None, 400, "invalid_request"),
        ("GET", "/admin/runs?limit=0", None, 400, "invalid_request"),
        ("GET", "/admin/runs?limit=ten", None, 400, "invalid_request"),
        ("GET", "/admin/runs?since=yesterday", None, 400, "invalid_request"),
        ("GET", "/admin/runs?cursor=%25%25", None, 400, "invalid_request"),
        ("GET", "/admin/stats?window_hours=0", None, 400, "invalid_request"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    api: Callable[..., tuple[int, Any]], method: str, path: str, body: Any, status: int, code: str
) -> None:
    got_status, got = api(method, path, body)
    assert (got_status, got["error"]["code"]) == (status, code)
    assert got["error"]["message"]


def test_runs_are_listed_newest_first_a_page_at_a_time(api: Callable[..., tuple[int, Any]]) -> None:
    @job("it.listed", queue="catalog", retry=Retry(max_attempts=1))
    def listed(ctx: JobContext, n: int) -> int:
        if n == 3:
            raise RuntimeError("three fails")
        return n

    ids = []
    for n in range(7):
        envelope = enqueue.build("it.listed", {"n": n})
        dispatch(envelope)
        ids.append(envelope.id)

    seen, cursor, pages = [], None, 0
    while True:
        status, body = api("GET", "/admin/runs?name=it.listed&limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200
        seen += body["runs"]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert pages == 3 and [r["job_id"] for r in seen] == list(reversed(ids))

    status, body = api("GET", "/admin/runs?name=it.listed&status=failed")
    assert [r["args"] for r in body["runs"]] == [{"n": 3}]
    status, body = api("GET", "/admin/runs?name=it.listed&since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z")
    assert status == 200 and body["runs"] == []  # a time range before these runs
    status, body = api("GET", "/admin/runs?status=failed&since=2020-01-01T00:00:00Z")
    assert ids[3] in {r["job_id"] for r in body["runs"]} and {r["status"] for r in body["runs"]} == {"failed"}
    status, body = api("GET", "/admin/runs?limit=500")  # every job, across names
    assert {r["job_id"] for r in body["runs"]} >= set(ids)

    status, body = api("GET", f"/admin/jobs/{ids[3]}")
    assert status == 200 and body["status"] == "failed" and body["runs"][0]["error_message"] == "three fails"

    status, body = api("GET", "/admin/stats")
    assert status == 200 and body["runs"]["total"] >= 7 and body["runs"]["failed"] >= 1
    assert body["runs"]["in_window"] >= 7
    assert set(body["per_task"]) >= {"platform.housekeeping"} and body["tasks"]["total"] >= 2


def test_batches_and_queues_and_redrive(api: Callable[..., tuple[int, Any]]) -> None:
    @job("it.batch_child", queue="catalog")
    def batch_child(ctx: JobContext, n: int) -> None:
        pass

    batch_id = batches.enqueue_batch([JobRequest(name="it.batch_child", args={"n": n}) for n in range(3)])
    status, body = api("GET", f"/admin/batches/{batch_id}")
    assert status == 200 and body["total"] == 3 and body["pending"] == 3 and body["status"] == "running"

    dlq = aws.queue_url(get_queue("catalog").dlq_name())
    for n in range(12):
        aws.sqs().send_message(QueueUrl=dlq, MessageBody=f"dead {n}")
    status, body = api("GET", "/admin/queues")
    assert body["queues"]["catalog"]["dlq"] == 12 and body["queues"]["catalog"]["visible"] == 3

    status, body = api("POST", "/admin/queues/catalog/redrive")
    assert status == 200 and body["moved"] == 12
    status, body = api("GET", "/admin/queues")
    assert body["queues"]["catalog"]["dlq"] == 0 and body["queues"]["catalog"]["visible"] == 15


class Counter:
    runs = 0
    broken = True
    lock = threading.Lock()


@migration
class CountingMigration(Migration):
    id = "2026-11-22_it_counting"
    description = "counts its runs; fails while broken"

    def run(self, ctx: JobContext) -> dict[str, int]:
        with Counter.lock:
            Counter.runs += 1
        if Counter.broken:
            raise RuntimeError("bad data in row 7")
        return {"rows": 7}


def test_a_migration_started_twice_at_once_runs_once(
    api: Callable[..., tuple[int, Any]], platform: Callable[..., LocalRuntime]
) -> None:
    Counter.runs, Counter.broken = 0, False
    migrations_runtime = platform(fast("maintenance", max_concurrency=4, batch_size=1), run_migrations=False)
    envelopes = [enqueue.build("platform.run_migration", {"migration_id": CountingMigration.id}) for _ in range(2)]
    enqueue.send(envelopes)  # two starts, delivered to two handlers at once
    wait_for(lambda: migrations.status(CountingMigration.id) == "succeeded", 15, "the migration")
    assert Counter.runs == 1
    assert CountingMigration.id not in migrations.start_pending()  # a succeeded migration never runs again
    assert migrations_runtime.pollers


def test_a_failing_migration_is_recorded_failed_and_can_be_retried(
    api: Callable[..., tuple[int, Any]], platform: Callable[..., LocalRuntime]
) -> None:
    Counter.runs, Counter.broken = 0, True
    platform(fast("maintenance"), run_migrations=False)
    enqueue.enqueue("platform.run_migration", {"migration_id": CountingMigration.id})
    wait_for(lambda: migrations.status(CountingMigration.id) == "failed", 15, "the failure")
    status, body = api("GET", "/admin/migrations")
    row = next(m for m in body["migrations"] if m["id"] == CountingMigration.id)
    assert row["status"] == "failed" and row["error"] == "RuntimeError: bad data in row 7" and row["ended_at"]

    Counter.broken = False  # the fix is deployed
    status, body = api("POST", f"/admin/migrations/{CountingMigration.id}/retry")
    assert status == 200 and body["job_id"]
    wait_for(lambda: migrations.status(CountingMigration.id) == "succeeded", 15, "the retry")
    assert Counter.runs == 2
    status, body = api("POST", f"/admin/migrations/{CountingMigration.id}/retry")
    assert status == 409 and body["error"]["code"] == "conflict"

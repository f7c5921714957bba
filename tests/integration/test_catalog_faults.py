"""The catalog against a faulty TMDB (the sample's injected faults): 5xx, timeouts and malformed answers are retried
with backoff inside the client, then fail the job transiently; a 429 is waited out when its Retry-After is short,
else the job is sent again after it; a 404 is a result (the item is kept, flagged removed), never a retry. Whatever
fails, the catalog keeps what it had: nothing is lost or half-written."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalice.test import Client

import app as app_module
from chalicelib import aws
from chalicelib.catalog import jobs as catalog_jobs
from chalicelib.catalog import store
from chalicelib.clock import utcnow
from chalicelib.health import queue_depth
from chalicelib.jobs import enqueue, runs
from chalicelib.jobs.dispatch import dispatch
from chalicelib.jobs.queues import get_queue
from chalicelib.jobs.retry import RetryLaterError
from chalicelib.models.catalog import CatalogItem, MediaList, Movie, SyncState
from chalicelib.upstreams import tmdb
from chalicelib.upstreams.http import TransientUpstreamError
from infra.local.runtime import LocalRuntime
from infra.local.upstreams.tmdb import SampleTMDB
from tests.integration.catalog_fixtures import signed_in
from tests.integration.platform_fixtures import wait_for

Api = Callable[..., tuple[int, Any]]
NOTLD, CHARADE, METROPOLIS, UNKNOWN = 10331, 4808, 19, 123456789


def details(movie_id: int) -> str:
    return rf"^/3/movie/{movie_id}$"


def catalog_snapshot() -> dict[tuple[str, str], dict[str, Any]]:
    """Every item of the catalog table, as stored (DynamoDB's own form)."""
    return {(i.pk, i.sk): i.serialize() for i in CatalogItem.scan(consistent_read=True)}


def stored_movie(movie_id: int) -> dict[str, Any]:
    return dict(Movie.get(*Movie.key(movie_id), consistent_read=True).attribute_values)


def store_days_ago(*movie_ids: int, days: int = 3) -> datetime:
    """Sync the movies as if `days` ago: stored, and their cached responses too old for any later sync."""
    then = datetime.now(UTC) - timedelta(days=days)
    client = tmdb.get_tmdb()
    client.api.clock = lambda: then
    try:
        for movie_id in movie_ids:
            assert catalog_jobs.sync_movie_now(movie_id, now=then) == "synced"
    finally:
        client.api.clock = utcnow
    return then


def list_members(slug: str) -> list[int]:
    media_list: Any = MediaList.get(*MediaList.key(slug), consistent_read=True)
    return [int(m) for m in media_list.members]


def statuses(sample: SampleTMDB, pattern: str) -> list[int]:
    return [r.status for r in sorted(sample.served(pattern), key=lambda r: r.at)]


def catalog_queue() -> dict[str, int]:
    return queue_depth(get_queue("catalog"))


@pytest.fixture
def http() -> Iterator[Callable[[str], Any]]:
    """GET through the real app as a signed-in user, keeping the response's headers (`api` returns only the body)."""
    with Client(app_module.app) as client:
        yield lambda path: client.http.get(path, headers=signed_in())


# -- transient faults, once ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "first_status"), [("500", 500), ("503", 503), ("malformed", 200), ("html", 200), ("timeout", 200)]
)
def test_a_single_transient_fault_is_retried_inside_the_client_and_the_sync_succeeds(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB, kind: str, first_status: int
) -> None:
    catalog(run_pollers=False)
    # Given a stored movie that TMDB has since changed, and TMDB failing once on its details (a timeout: the
    # answer comes after 3 s, past the client's 2 s read timeout)
    assert catalog_jobs.sync_movie_now(NOTLD) == "synced"
    sample_tmdb.change_movie(NOTLD, title="Night of the Living Dead (restored)")
    sample_tmdb.fail(details(NOTLD), kind, times=1, delay=3.0)  # type: ignore[arg-type]
    sample_tmdb.reset_requests()

    # When it is synced again
    outcome = catalog_jobs.sync_movie_now(NOTLD, max_age=0)

    # Then the client retried once and the movie is updated
    assert outcome == "synced"
    wait_for(lambda: len(sample_tmdb.served(details(NOTLD))) >= 2, 5, "both requests to be logged")
    assert statuses(sample_tmdb, details(NOTLD)) == [first_status, 200], f"{kind}: one failed request, one retry"
    assert Movie.get(*Movie.key(NOTLD), consistent_read=True).title == "Night of the Living Dead (restored)"


# -- transient faults that persist ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "503", "malformed", "html"])
def test_a_persisting_transient_fault_fails_after_three_attempts_and_the_job_retries_with_the_movie_unchanged(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB, kind: str
) -> None:
    catalog(run_pollers=False)
    # Given a stored movie (its cached response long stale), changed on TMDB, whose details now always fail
    store_days_ago(NOTLD)
    sample_tmdb.change_movie(NOTLD, title="Should never be stored", overview="Nor this.")
    before, movie_before = catalog_snapshot(), stored_movie(NOTLD)
    sample_tmdb.fail(details(NOTLD), kind, times=-1)  # type: ignore[arg-type]
    sample_tmdb.reset_requests()

    # When it is synced: the client gives up after its 3 attempts with a transient error
    with pytest.raises(TransientUpstreamError):
        catalog_jobs.sync_movie_now(NOTLD)
    assert len(sample_tmdb.served(details(NOTLD))) == 3, "a job's client makes 3 attempts"
    assert stored_movie(NOTLD) == movie_before
    assert catalog_snapshot() == before, "nothing in the catalog changed"

    # When the sync job runs: it ends `retrying`, with its next attempt on the queue, and the catalog unchanged
    sample_tmdb.reset_requests()
    envelope = enqueue.build("catalog.sync_movie", {"movie_id": NOTLD})
    assert dispatch(envelope) == "retrying"
    [run] = runs.job_runs(envelope.id)
    assert run["status"] == "retrying" and run["error_type"] == "TransientUpstreamError"
    assert len(sample_tmdb.served(details(NOTLD))) == 3
    depth = catalog_queue()
    assert depth["visible"] + depth["delayed"] == 1, f"the next attempt is queued: {depth}"
    assert stored_movie(NOTLD) == movie_before
    assert catalog_snapshot() == before


# -- 429 ------------------------------------------------------------------------------------------------------


def test_a_429_with_a_short_retry_after_is_waited_out_inside_the_client(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    sample_tmdb.fail(details(CHARADE), "429", times=1, retry_after=1)

    assert catalog_jobs.sync_movie_now(CHARADE) == "synced"

    served = sorted(sample_tmdb.served(details(CHARADE)), key=lambda r: r.at)
    assert [r.status for r in served] == [429, 200]
    waited = served[1].at - served[0].at
    assert waited >= 0.9, f"the retry came {waited:.2f}s after the 429, before its Retry-After of 1s"
    assert Movie.get(*Movie.key(CHARADE)).title == "Charade"


def test_a_429_with_a_long_retry_after_sends_the_job_again_after_that_delay(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    store_days_ago(NOTLD)
    sample_tmdb.change_movie(NOTLD, title="Should never be stored")
    before = catalog_snapshot()
    sample_tmdb.fail(details(NOTLD), "429", times=-1, retry_after=120)
    sample_tmdb.reset_requests()

    # When it is synced: no waiting in the client, the caller is told to come back in 120 s
    with pytest.raises(RetryLaterError) as raised:
        catalog_jobs.sync_movie_now(NOTLD)
    assert raised.value.retry_after == 120
    assert len(sample_tmdb.served(details(NOTLD))) == 1

    # When the job runs: it ends retrying and its next attempt waits on the queue (SQS DelaySeconds)
    envelope = enqueue.build("catalog.sync_movie", {"movie_id": NOTLD})
    assert dispatch(envelope) == "retrying"
    assert [r["status"] for r in runs.job_runs(envelope.id)] == ["retrying"]
    depth = catalog_queue()
    assert depth["delayed"] == 1 and depth["visible"] == 0, f"the next attempt is delayed: {depth}"
    assert catalog_snapshot() == before


# -- 404 ------------------------------------------------------------------------------------------------------


def test_a_404_for_a_deleted_movie_flags_it_removed_keeps_its_data_and_is_not_retried(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB, api: Api
) -> None:
    catalog(run_pollers=False)
    # Given a stored movie that TMDB then deletes
    assert catalog_jobs.sync_movie_now(NOTLD) == "synced"
    before = stored_movie(NOTLD)
    assert before.get("removed_at") is None
    sample_tmdb.delete_movie(NOTLD)
    sample_tmdb.reset_requests()

    # When it is synced again
    outcome = catalog_jobs.sync_movie_now(NOTLD, max_age=0)

    # Then one request, no retry; the movie keeps all its data, flagged removed
    assert outcome == "removed"
    assert statuses(sample_tmdb, details(NOTLD)) == [404]
    after = stored_movie(NOTLD)
    assert after.get("removed_at") is not None
    keep = {k: v for k, v in before.items() if k not in ("removed_at", "synced_at")}
    assert {k: after.get(k) for k in keep} == keep

    # And the API still serves it, flagged
    status, movie = api("GET", f"/movies/{NOTLD}")
    assert status == 200 and movie["removed"] is True and movie["title"] == "Night of the Living Dead"

    # And a user refresh of it (a job, bypassing the cache) succeeds at once: a 404 is a result, not a retry
    sample_tmdb.reset_requests()
    envelope = enqueue.build("catalog.refresh_movie", {"movie_id": NOTLD})
    assert dispatch(envelope) == "succeeded"
    assert runs.job_runs(envelope.id)[0]["result"]["outcome"] == "removed"
    assert statuses(sample_tmdb, details(NOTLD)) == [404]


def test_a_movie_unknown_to_tmdb_is_a_404_json_error_and_the_404_is_cached(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB, api: Api
) -> None:
    catalog(run_pollers=False)

    status, body = api("GET", f"/movies/{UNKNOWN}")
    assert status == 404
    assert set(body["error"]) >= {"code", "message"} and body["error"]["code"] == "not_found"
    assert statuses(sample_tmdb, details(UNKNOWN)) == [404]

    status, body = api("GET", f"/movies/{UNKNOWN}")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert len(sample_tmdb.served(details(UNKNOWN))) == 1, "the second GET was answered from the cached 404"
    assert not _exists_movie(UNKNOWN)


def _exists_movie(movie_id: int) -> bool:
    try:
        Movie.get(*Movie.key(movie_id), consistent_read=True)
        return True
    except Movie.DoesNotExist:
        return False


# -- the changes sync -----------------------------------------------------------------------------------------


def _changes_on_yesterday(sample: SampleTMDB) -> datetime:
    """NOTLD and CHARADE stored three days ago, both changed yesterday; the cursor on yesterday."""
    now = datetime.now(UTC)
    yesterday = now.date() - timedelta(days=1)
    store_days_ago(NOTLD, CHARADE)
    SyncState(*SyncState.key("movie_changes"), name="movie_changes", cursor=yesterday.isoformat()).save()
    sample.change_movie(NOTLD, day=yesterday, title="Night of the Living Dead (restored)")
    sample.change_movie(CHARADE, day=yesterday, overview="A new overview.")
    sample.reset_requests()
    return now


def test_the_changes_sync_refetches_the_others_when_one_movie_keeps_failing_and_records_it(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    now = _changes_on_yesterday(sample_tmdb)
    notld_before = stored_movie(NOTLD)
    sample_tmdb.fail(details(NOTLD), "500", times=-1)

    summary = catalog_jobs.sync_changes("movie", now=now)

    # Then the other movie is refetched, the failing one is recorded and kept as it was, the cursor moves on
    assert summary["refetched"] == 1 and summary["failed"] == [NOTLD]
    assert Movie.get(*Movie.key(CHARADE)).overview == "A new overview."
    assert stored_movie(NOTLD) == notld_before
    assert len(sample_tmdb.served(details(NOTLD))) == 3
    state = SyncState.get(*SyncState.key("movie_changes"), consistent_read=True)
    assert state.cursor == now.date().isoformat()
    assert [int(i) for i in state.data["failed"]] == [NOTLD]


def test_the_changes_sync_keeps_its_cursor_when_every_refetch_of_a_day_fails(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    now = _changes_on_yesterday(sample_tmdb)
    before = catalog_snapshot()
    sample_tmdb.fail(rf"^/3/movie/({NOTLD}|{CHARADE})$", "500", times=-1)

    with pytest.raises(TransientUpstreamError):
        catalog_jobs.sync_changes("movie", now=now)

    state = SyncState.get(*SyncState.key("movie_changes"), consistent_read=True)
    assert state.cursor == (now.date() - timedelta(days=1)).isoformat(), "the day is tried again"
    assert catalog_snapshot() == before, "nothing in the catalog changed"


# -- the list refresh -----------------------------------------------------------------------------------------


def test_a_list_refresh_with_one_failing_list_refreshes_the_others_and_keeps_that_one_whole(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    # Given the lists, refreshed once
    assert dispatch(enqueue.build("catalog.refresh_lists")) == "succeeded"
    lists_before = {slug: MediaList.get(*MediaList.key(slug), consistent_read=True) for slug in catalog_jobs.LISTS}
    top_rated_before = lists_before["top-rated-movies"].serialize()

    # When TMDB's lists change, an hour later, and the top rated movies answer 500 forever
    popular = [METROPOLIS, CHARADE, NOTLD]
    sample_tmdb.set_list("movie/popular", popular)
    sample_tmdb.set_list("movie/top_rated", [METROPOLIS])
    tmdb.get_tmdb().api.clock = lambda: utcnow() + timedelta(hours=1)  # the cached pages are old
    sample_tmdb.fail(r"^/3/movie/top_rated$", "500", times=-1)
    envelope = enqueue.build("catalog.refresh_lists")
    outcome = dispatch(envelope)

    # Then the job retries later, the other lists are refreshed, and the failing one is exactly as it was
    assert outcome == "retrying"
    assert [r["status"] for r in runs.job_runs(envelope.id)] == ["retrying"]
    for slug in catalog_jobs.LISTS:
        after = MediaList.get(*MediaList.key(slug), consistent_read=True)
        if slug == "top-rated-movies":
            assert after.serialize() == top_rated_before, "the failing list was not touched"
        else:
            assert after.refreshed_at > lists_before[slug].refreshed_at, f"{slug} was refreshed"
    assert list_members("popular-movies") == popular


# -- API reads while TMDB is down -----------------------------------------------------------------------------


def test_reading_a_movie_not_stored_while_tmdb_is_down_is_a_503_with_retry_after(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB, http: Callable[[str], Any]
) -> None:
    catalog(run_pollers=False)
    sample_tmdb.fail(details(METROPOLIS), "503", times=-1)

    response = http(f"/movies/{METROPOLIS}")

    assert response.status_code == 503
    body = json.loads(response.body)
    assert set(body["error"]) >= {"code", "message"}
    retry_after = {k.lower(): v for k, v in response.headers.items()}.get("retry-after")
    assert retry_after is not None and int(retry_after) > 0, f"no Retry-After header: {response.headers}"
    assert len(sample_tmdb.served(details(METROPOLIS))) == 2, "an interactive client makes 2 attempts"
    assert not _exists_movie(METROPOLIS)


def test_reading_a_list_stub_while_tmdb_is_down_serves_the_stub_as_it_is(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB, api: Api
) -> None:
    catalog(run_pollers=False)
    # Given a movie known only from a list entry
    entry = tmdb.get_tmdb().list_page("movie/popular", 1).results
    item = next(i for i in entry if i.id == NOTLD)
    store.save_stub("movie", item, catalog_jobs.languages())
    before = stored_movie(NOTLD)
    sample_tmdb.fail(details(NOTLD), "503", times=-1)

    status, movie = api("GET", f"/movies/{NOTLD}")

    assert status == 200
    assert movie["complete"] is False and movie["title"] == "Night of the Living Dead"
    assert stored_movie(NOTLD) == before


def test_a_movie_that_keeps_failing_is_tried_once_more_on_the_next_run_then_given_up(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    now = _changes_on_yesterday(sample_tmdb)
    sample_tmdb.fail(details(NOTLD), "500", times=-1)
    catalog_jobs.sync_changes("movie", now=now)  # NOTLD recorded as failed, the cursor on today

    # When the next run comes a day later (nothing of the catalog changed today) and NOTLD still fails
    later = now + timedelta(days=1)
    sample_tmdb.reset_requests()
    try:
        catalog_jobs.sync_changes("movie", now=later)
    except TransientUpstreamError as exc:
        pytest.fail(
            f"a movie failing on the next run too stops the changes sync for good ({exc}): the retried ids make up "
            "the whole day's todo, so every later run raises and the cursor never moves"
        )

    # Then it was tried once more, then given up: the cursor moves on and nothing is left to retry
    assert len(sample_tmdb.served(details(NOTLD))) == 3
    state = SyncState.get(*SyncState.key("movie_changes"), consistent_read=True)
    assert state.cursor == later.date().isoformat()
    assert list(state.data["failed"]) == []


def test_a_failure_on_an_earlier_day_of_a_catch_up_run_is_remembered_for_the_next_run(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    now = datetime.now(UTC)
    before = now.date() - timedelta(days=2)
    store_days_ago(NOTLD, CHARADE)
    SyncState(*SyncState.key("movie_changes"), name="movie_changes", cursor=before.isoformat()).save()
    sample_tmdb.change_movie(NOTLD, day=before, title="Night of the Living Dead (restored)")
    sample_tmdb.change_movie(CHARADE, day=before, overview="A new overview.")
    sample_tmdb.fail(details(NOTLD), "500", times=-1)

    # When one run catches up two days: NOTLD fails on the first, nothing of the catalog changed on the second
    summary = catalog_jobs.sync_changes("movie", now=now)

    assert summary["days"] == [before.isoformat(), (before + timedelta(days=1)).isoformat()]
    assert summary["failed"] == [NOTLD]
    state = SyncState.get(*SyncState.key("movie_changes"), consistent_read=True)
    assert [int(i) for i in state.data.get("failed", [])] == [NOTLD], (
        f"NOTLD failed on {before} but the stored failures are {state.data.get('failed')}: the next day of the "
        "same run overwrote them, so it is never tried again"
    )


def test_a_list_refresh_cut_short_by_a_long_429_still_sends_the_syncs_of_the_stubs_it_created(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    # Given TMDB rate limiting the popular shows (a later list) for two minutes
    sample_tmdb.fail(r"^/3/tv/popular$", "429", times=-1, retry_after=120)

    # When the list refresh runs: the movie lists are stored, with stubs for their members, then the 429 stops it
    envelope = enqueue.build("catalog.refresh_lists")
    assert dispatch(envelope) == "retrying"
    stubs = set(list_members("popular-movies"))
    assert stubs and all(Movie.get(*Movie.key(i)).synced_at is None for i in stubs)

    # And its retry runs once TMDB answers again
    sample_tmdb.clear_faults()
    assert dispatch(envelope.next_attempt()) == "succeeded"

    # Then every stub has its full sync on the queue, from one run or the other
    queued: set[int] = set()
    url = aws.queue_url(get_queue("catalog").queue_name())
    while True:
        messages = aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            break
        for message in messages:
            body = json.loads(message["Body"])
            if body["name"] == "catalog.sync_movie":
                queued.add(int(body["args"]["movie_id"]))
    missing = stubs - queued
    assert not missing, (
        f"{len(missing)} list stubs ({sorted(missing)}) never get their sync: the RetryLaterError skipped the "
        "enqueue, and the retry counts them as known"
    )

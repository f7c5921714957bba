"""Sources on the local runtime against the sample YTS, Torznab and TMDB: a new movie's search, mirror failover
and circuit breakers, feed matching by IMDb id and by release name, merging across YTS and feeds, ranking
through the API, and the feeds API with its encrypted keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalicelib.catalog import jobs as catalog_jobs
from chalicelib.jobs import enqueue
from chalicelib.models.catalog import Movie
from chalicelib.models.sources import Feed, Source
from chalicelib.secrets import mask
from chalicelib.sources import feeds, store
from chalicelib.sources import jobs as source_jobs
from chalicelib.upstreams import yts as yts_client
from infra.local.runtime import LocalRuntime
from infra.local.upstreams.torznab import SampleTorznab
from infra.local.upstreams.yts import SampleYTS, info_hash
from tests.integration.platform_fixtures import wait_for

Api = Callable[..., tuple[int, Any]]
NOTLD, CHARADE, ELEPHANTS_DREAM, BIG_BUCK_BUNNY, BONANZA = 10331, 4808, 9761, 10378, 2310
ADMIN = {"Authorization": "Bearer local-admin-token"}


def source_hashes(movie_id: int) -> list[str]:
    return [s.infohash for s in store.best(movie_id, 50)]


def test_a_new_movie_gets_sources_within_one_planner_tick_and_one_job(
    sources: Callable[..., LocalRuntime], sample_yts: SampleYTS, api: Api
) -> None:
    sources()
    # Given a movie new in the catalog (due for a search at once)
    catalog_jobs.sync_movie_now(NOTLD)
    # When the planner ticks once, and the one job it sends runs
    assert source_jobs.plan_searches() == 1
    wait_for(lambda: Movie.get(*Movie.key(NOTLD), consistent_read=True).sources_searched_at, 20, "the search")

    # Then its YTS torrents are its sources, ranked: the preferred 1080p x264 first, then 1080p x265
    expected_best = info_hash("tt0063350", "1080p", "bluray", "x264").lower()
    status, body = api("GET", f"/movies/{NOTLD}/sources")
    assert status == 200 and body["searched_at"]
    ranked = [s["infohash"] for s in body["sources"]]
    assert ranked[0] == expected_best and len(ranked) == 4
    assert [s["quality"] for s in body["sources"]][:2] == ["1080p", "1080p"]
    assert body["sources"][0]["magnet"].startswith(f"magnet:?xt=urn:btih:{expected_best}")
    assert body["sources"][0]["stats_age_seconds"] is None  # only YTS's figures so far: due for a scrape
    movie = Movie.get(*Movie.key(NOTLD))
    assert movie.sources_found == 4 and movie.due_pk == "DUE#SOURCE_SEARCH#1"  # a hit: again in 24 h
    # and the next tick sends nothing: nothing else is due
    assert source_jobs.plan_searches() == 0


def test_a_miss_comes_back_in_45_to_75_minutes_and_3d_is_never_ranked(
    sources: Callable[..., LocalRuntime], sample_yts: SampleYTS
) -> None:
    sources(run_pollers=False)
    catalog_jobs.sync_movie_now(ELEPHANTS_DREAM)  # no YTS entry
    catalog_jobs.sync_movie_now(BIG_BUCK_BUNNY)  # has a 3D torrent
    from datetime import datetime

    miss = source_jobs.search_movie_now(ELEPHANTS_DREAM)
    assert miss["found"] == 0
    wait = datetime.fromisoformat(miss["next_search"]) - Movie.get(*Movie.key(ELEPHANTS_DREAM)).sources_searched_at
    assert 45 * 60 <= wait.total_seconds() <= 75 * 60

    hit = source_jobs.search_movie_now(BIG_BUCK_BUNNY)
    assert hit["found"] == 4
    three_d = Source.get(*Source.key(info_hash("tt1254207", "3D", "bluray", "x264").lower()))
    assert three_d.score is None and three_d.media_pk is None
    assert len(source_hashes(BIG_BUCK_BUNNY)) == 3


def test_mirror_failover_finds_sources_when_the_first_two_mirrors_fail(
    sources: Callable[..., LocalRuntime], sample_yts: SampleYTS
) -> None:
    sources(run_pollers=False)
    first, second, third = sample_yts.mirrors[:3]
    sample_yts.set_mirror(first, "500")
    sample_yts.set_mirror(second, "html")
    for movie_id in (NOTLD, CHARADE, 3085, 653):
        catalog_jobs.sync_movie_now(movie_id)

    # Within one job: the first two fail, the third answers
    assert source_jobs.search_movie_now(NOTLD)["found"] == 4
    assert [len(sample_yts.served(server=m)) for m in (first, second, third)] == [1, 1, 1]

    # After three failures a mirror's breaker opens: it is skipped, without a request
    source_jobs.search_movie_now(CHARADE)
    source_jobs.search_movie_now(3085)
    sample_yts.reset_requests()
    assert source_jobs.search_movie_now(653)["found"] == 3
    assert [len(sample_yts.served(server=m)) for m in (first, second, third)] == [0, 0, 1]
    health = {row["mirror"]: row for row in yts_client.mirror_health(yts_client.get_yts().mirrors)}
    urls = sample_yts.mirror_urls
    assert health[urls[first]]["state"] == "open" and health[urls[second]]["state"] == "open"
    assert "not JSON" in health[urls[second]]["last_error"]
    assert health[urls[third]]["state"] == "closed"


def test_every_mirror_down_is_a_transient_failure_and_the_job_retries(
    sources: Callable[..., LocalRuntime], sample_yts: SampleYTS
) -> None:
    sources(run_pollers=False)
    for mirror in sample_yts.mirrors:
        sample_yts.set_mirror(mirror, "down")
    catalog_jobs.sync_movie_now(NOTLD)
    from chalicelib.jobs.dispatch import dispatch

    assert dispatch(enqueue.build("sources.search_movie", {"movie_id": NOTLD})) == "retrying"
    assert source_hashes(NOTLD) == []


def test_feed_items_match_by_imdb_id_and_by_release_name_and_merge_with_yts(
    sources: Callable[..., LocalRuntime], sample_torznab: SampleTorznab
) -> None:
    sources(run_pollers=False)
    for movie_id in (NOTLD, CHARADE, ELEPHANTS_DREAM, BIG_BUCK_BUNNY):
        catalog_jobs.sync_movie_now(movie_id)
    catalog_jobs.sync_show_now(BONANZA)
    source_jobs.search_movie_now(NOTLD)  # YTS first
    alpha = feeds.register("alpha", sample_torznab.feed_url("alpha"), sample_torznab.api_key("alpha"))
    beta = feeds.register("beta", sample_torznab.feed_url("beta"), sample_torznab.api_key("beta"))

    counts = feeds.fetch_feed_now(alpha.feed_id)
    feeds.fetch_feed_now(beta.feed_id)

    assert counts["matched"] >= 3
    by_title = {s.title: s for s in Source.scan() if isinstance(s, Source)}
    # by IMDb id
    assert by_title["Night.of.the.Living.Dead.1968.1080p.BluRay.x264-GROUP"].owner == f"MOVIE#{NOTLD}"
    # by release name only (no imdb attr): Charade
    charade = [s for s in by_title.values() if s.title.startswith("Charade")]
    assert charade and {s.owner for s in charade} == {f"MOVIE#{CHARADE}"}
    # a YTS miss found on a feed (by name): Elephants Dream, from beta
    assert any(s.owner == f"MOVIE#{ELEPHANTS_DREAM}" for s in by_title.values())
    # a duplicate across YTS and a feed is one source, found by both
    yts_720 = Source.get(*Source.key(info_hash("tt0063350", "720p", "bluray", "x264").lower()))
    assert yts_720.discovered_via == {"yts", f"feed:{alpha.feed_id}"}
    # a duplicate across the two feeds, likewise
    shared = [s for s in by_title.values() if s.discovered_via >= {f"feed:{alpha.feed_id}", f"feed:{beta.feed_id}"}]
    assert shared
    # an episode matched by the show's IMDb id and its season and episode: owned by the episode
    assert by_title["Bonanza.S01E02.720p.WEB.h264-GRP"].owner == f"EPISODE#{BONANZA}#1#2"
    # a season pack is not a source of one episode
    assert not [s for s in by_title.values() if "S02" in s.title and "OLDTV" in s.title]

    # fetching again changes nothing: matching and upserting are idempotent
    before = {s.infohash: (s.owner, s.discovered_via, s.version) for s in Source.scan() if isinstance(s, Source)}
    feeds.fetch_feed_now(alpha.feed_id)
    after = {s.infohash: (s.owner, s.discovered_via) for s in Source.scan() if isinstance(s, Source)}
    assert {h: v[:2] for h, v in before.items()} == after


def test_the_feeds_api_stores_keys_encrypted_and_never_shows_them(
    sources: Callable[..., LocalRuntime], sample_torznab: SampleTorznab, api: Api
) -> None:
    sources(run_pollers=False)
    key = sample_torznab.api_key("alpha")

    def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return api(method, path, body, ADMIN if headers is None else headers)

    new_feed = {"name": "alpha", "url": sample_torznab.feed_url("alpha"), "api_key": key}
    status, created = call("POST", "/feeds", new_feed)
    assert status == 201 and created["api_key"] == mask(key) and created["api_key"] != key
    stored = Feed.get(*Feed.key(created["id"]))
    assert key not in stored.api_key_encrypted and key not in json.dumps(stored.serialize())
    status, listed = call("GET", "/feeds")
    assert [f["id"] for f in listed["feeds"]] == [created["id"]] and key not in json.dumps(listed)

    assert call("GET", "/feeds", headers={})[0] == 401
    assert call("POST", "/feeds", {"name": "x"})[0] == 400
    assert call("POST", "/feeds", {"name": "x", "url": "ftp://nope"})[0] == 400
    assert call("POST", "/feeds", {"name": "x", "url": "http://a/api", "extra": 1})[0] == 400
    assert call("DELETE", "/feeds/nope")[0] == 404
    assert call("DELETE", f"/feeds/{created['id']}")[0] == 204
    assert call("GET", "/feeds")[1]["feeds"] == []


def test_asking_for_a_search_sends_one_job(sources: Callable[..., LocalRuntime], api: Api) -> None:
    sources(run_pollers=False)
    catalog_jobs.sync_movie_now(NOTLD)
    answers = [api("POST", f"/movies/{NOTLD}/sources/search") for _ in range(3)]
    assert {status for status, _ in answers} == {202}
    assert len({body["job_id"] for _, body in answers}) == 1
    assert api("POST", "/movies/123456789/sources/search")[0] == 404
    assert api("GET", "/movies/abc/sources")[0] == 400


def test_malformed_answers_from_a_feed_or_a_mirror_fail_softly(
    sources: Callable[..., LocalRuntime], sample_yts: SampleYTS, sample_torznab: SampleTorznab
) -> None:
    from chalicelib.jobs import runs
    from chalicelib.jobs.dispatch import dispatch

    sources(run_pollers=False)
    catalog_jobs.sync_movie_now(NOTLD)
    feed = feeds.register("alpha", sample_torznab.feed_url("alpha"), sample_torznab.api_key("alpha"))
    # A feed answering truncated XML: the fetch job fails transiently (to be retried), recorded on the feed
    sample_torznab.fail(r"/feeds/alpha/api", "malformed", times=-1)
    envelope = enqueue.build("sources.fetch_feed", {"feed_id": feed.feed_id})
    assert dispatch(envelope) == "retrying"
    assert runs.job_runs(envelope.id)[0]["error_type"] == "TransientUpstreamError"
    assert feeds.get(feed.feed_id).last_fetch["status"] == "failed"
    # A mirror answering a malformed body: the next mirror is asked, the search finds its sources
    first = sample_yts.mirrors[0]
    sample_yts.fail(r"list_movies", "malformed", times=1, mirror=first)
    sample_torznab.clear_faults()
    assert source_jobs.search_movie_now(NOTLD)["found"] >= 4

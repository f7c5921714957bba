"""POST /streams: which source is chosen, what the answer carries, and the 4xx/503 answers. The streamer here is
a stand-in that records the warm-up calls (the real one is tested end to end in test_streamer.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib.catalog import jobs as catalog_jobs
from chalicelib.health import queue_depth
from chalicelib.jobs.queues import get_queue
from chalicelib.models.sources import Source
from chalicelib.settings import reset_settings
from chalicelib.sources import jobs as source_jobs
from chalicelib.sources import store
from chalicelib.streams import grants
from infra.local.runtime import LocalRuntime
from infra.local.upstreams.yts import info_hash

Api = Callable[..., tuple[int, Any]]
NOTLD, ELEPHANTS_DREAM = 10331, 9761


class StandIn:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.status = 202
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stand_in.started.append(self.path)
                self.send_response(stand_in.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def streamer(sources: Callable[..., LocalRuntime]) -> Iterator[StandIn]:
    stand_in = StandIn()
    os.environ.update(STREAMER_URL=stand_in.url, STREAMER_PUBLIC_URL="https://watch.example")
    reset_settings()
    sources(run_pollers=False)
    catalog_jobs.sync_movie_now(NOTLD)
    source_jobs.search_movie_now(NOTLD)
    yield stand_in
    stand_in.server.shutdown()


def test_the_best_live_source_is_granted_and_the_streamer_warmed_up(streamer: StandIn, api: Api) -> None:
    status, body = api("POST", "/streams", {"movie_id": NOTLD})
    assert status == 201
    best = info_hash("tt0063350", "1080p", "bluray", "x264").lower()
    assert body["source"]["infohash"] == best
    token = body["stream_url"].removeprefix("https://watch.example/stream/")
    grant = grants.verify(token)
    assert (grant.infohash, grant.file_index, grant.user) == (best, None, "viewer")
    assert body["status_url"] == f"https://watch.example/streams/{token}/status"
    assert body["expires_at"] == grant.expires_at
    assert streamer.started == [f"/streams/{token}/start"]


def test_a_source_with_known_files_is_preferred_among_the_best(streamer: StandIn, api: Api) -> None:
    second = store.best(NOTLD)[1]
    second.files = [{"path": "movie.mp4", "size": 123}]
    second.save()
    status, body = api("POST", "/streams", {"movie_id": NOTLD})
    assert status == 201 and body["source"]["infohash"] == second.infohash


def test_a_quality_and_a_source_can_be_asked_for(streamer: StandIn, api: Api) -> None:
    status, body = api("POST", "/streams", {"movie_id": NOTLD, "quality": "720p"})
    assert status == 201 and body["source"]["quality"] == "720p"
    uhd = info_hash("tt0063350", "2160p", "bluray", "x265").lower()
    status, body = api("POST", "/streams", {"source_id": uhd.upper(), "file_index": 0})
    assert status == 201 and body["source"]["infohash"] == uhd
    assert grants.verify(body["stream_url"].rsplit("/", 1)[1]).file_index == 0


def test_nothing_to_play_is_a_404_that_asks_for_a_search(streamer: StandIn, api: Api) -> None:
    catalog_jobs.sync_movie_now(ELEPHANTS_DREAM)  # never searched: no source
    before = queue_depth(get_queue("sources"))["visible"]
    status, body = api("POST", "/streams", {"movie_id": ELEPHANTS_DREAM})
    assert status == 404 and "search has been asked for" in body["error"]["message"]
    assert queue_depth(get_queue("sources"))["visible"] == before + 1
    assert api("POST", "/streams", {"movie_id": NOTLD, "quality": "480p"})[0] == 404
    assert api("POST", "/streams", {"movie_id": 123456789})[0] == 404
    assert api("POST", "/streams", {"source_id": "f" * 40})[0] == 404
    assert streamer.started == []


def test_a_dead_source_is_a_409(streamer: StandIn, api: Api) -> None:
    dead = store.best(NOTLD)[0]
    dead.dead = True
    store.rank(dead, dead.first_seen)
    dead.save()
    assert Source.get(*Source.key(dead.infohash)).dead
    status, body = api("POST", "/streams", {"source_id": dead.infohash})
    assert status == 409 and body["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "movie_id"),
        ({"movie_id": NOTLD, "source_id": "a" * 40}, "movie_id"),
        ({"movie_id": "10331"}, "movie_id"),
        ({"movie_id": True}, "movie_id"),
        ({"source_id": "xyz"}, "source_id"),
        ({"movie_id": NOTLD, "quality": "8k"}, "quality"),
        ({"movie_id": NOTLD, "file_index": -1}, "file_index"),
        ({"movie_id": NOTLD, "surprise": 1}, "surprise"),
    ],
)
def test_bad_bodies_are_a_400_naming_the_field(streamer: StandIn, api: Api, body: dict[str, Any], field: str) -> None:
    status, answer = api("POST", "/streams", body)
    assert status == 400 and answer["error"]["details"]["field"] == field
    assert streamer.started == []


def test_a_streamer_that_cannot_start_it_is_a_503(streamer: StandIn, api: Api) -> None:
    streamer.status = 500
    status, body = api("POST", "/streams", {"movie_id": NOTLD})
    assert status == 503 and body["error"]["code"] == "unavailable"
    streamer.server.shutdown()
    streamer.server.server_close()
    assert api("POST", "/streams", {"movie_id": NOTLD})[0] == 503

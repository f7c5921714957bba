"""The app answers as its OpenAPI document says: schemathesis generates requests for every operation of
chalicelib/api/openapi.py and sends them to the real app served over HTTP (Chalice's local server, on the
emulator, with the sample TMDB, YTS and Torznab behind it), signed in as an admin.

Each answer is checked: never a 5xx, a status the document lists for the operation, and a body that matches
the schema the document gives for that status. The run is bounded (a fixed number of generated cases per
operation plus schemathesis' coverage cases) and reproducible (a fixed seed, no example database).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from chalicelib import aws
from chalicelib.api.openapi import document
from chalicelib.settings import reset_settings
from infra.local.runtime import LocalRuntime, RuntimeOptions
from tests.conftest import free_port, unique_stage

NOTLD, BONANZA = 10331, 2310  # a movie and a show of the sample TMDB
ADMIN, ADMIN_PASSWORD = "fuzz-admin", "Schemathesis-Admin-Passphrase-42"
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
MAX_EXAMPLES = 20  # generated cases per operation, besides its examples and coverage cases
LOCK_AFTER = 5  # failed sign-ins of an account

schema = schemathesis.openapi.from_dict(
    document(),
    config=schemathesis.Config.from_dict(
        {
            "seed": 20261123,
            "request-timeout": 20,
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "with-security-parameters": False},
            "phases": {
                "stateful": {"enabled": False},
                # Not TRACE and QUERY: Chalice's local server has no handler for them (a bare 501 of its own).
                "coverage": {"unexpected-methods": ["get", "put", "post", "delete", "patch", "options"]},
            },
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        }
    ),
)


class StandInStreamer:
    """Accepts every warm-up (POST /streams/<token>/start), so POST /streams can succeed without libtorrent."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Served:
    url: str
    headers: dict[str, str]


def seed_catalog() -> None:
    """A little of everything, so GETs find real items: lists, genres, a movie with sources, a show."""
    from chalicelib.catalog import jobs as catalog_jobs
    from chalicelib.sources import jobs as source_jobs

    catalog_jobs.sync_genres(None)  # type: ignore[arg-type]
    catalog_jobs.refresh_list("popular-movies", 1)
    catalog_jobs.refresh_list("popular-shows", 1)
    catalog_jobs.sync_movie_now(NOTLD)
    catalog_jobs.sync_show_now(BONANZA)
    source_jobs.search_movie_now(NOTLD)


def sign_in(base_url: str) -> dict[str, str]:
    """An admin's Authorization header: a new admin account signed in through POST /auth/login, or the static
    ADMIN_TOKEN of the local runtime where accounts do not exist."""
    try:
        from chalicelib.auth.users import create_user
    except ImportError:
        return {"Authorization": f"Bearer {os.environ['ADMIN_TOKEN']}"}
    create_user(ADMIN, ADMIN_PASSWORD, role="admin")
    answer = requests.post(f"{base_url}/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD}, timeout=30)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    saved = dict(os.environ)
    # The runtime serves the sample upstreams for what is not configured: make sure nothing is.
    for key in ("TMDB_TOKEN", "TMDB_API_KEY", "TMDB_BASE_URL", "YTS_MIRRORS", "TRACKERS", "STREAMER_PUBLIC_URL"):
        os.environ.pop(key, None)
    streamer = StandInStreamer()
    os.environ.update(
        STREAMER_URL=streamer.url,
        TMDB_RATE_LIMIT="500",  # the fuzzer asks for many unknown ids, each a TMDB request: never wait on the limit
        TMDB_TIMEOUT="5",
        YTS_REQUESTS_PER_MINUTE="6000",
        YTS_TIMEOUT="2",
        ACCESS_TOKEN_MINUTES="60",  # outlives the run
        LOGIN_MAX_FAILURES=str(LOCK_AFTER),
        LOGIN_MAX_FAILURES_PER_IP="10000",  # the fuzzer's failed sign-ins all come from 127.0.0.1
    )
    port = free_port()
    runtime = LocalRuntime(
        RuntimeOptions(
            serve_api=True,
            port=port,
            data_dir=None,
            emulator_port=0,
            stage=unique_stage(),
            sample_tmdb_port=0,
            run_ticker=False,
            run_pollers=False,
            torrent_worker=False,
            streamer_port=None,
        )
    )
    try:
        runtime.start()
        seed_catalog()
        url = f"http://127.0.0.1:{port}"
        yield Served(url=url, headers=sign_in(url))
    finally:
        runtime.stop()
        streamer.stop()
        os.environ.clear()
        os.environ.update(saved)
        reset_settings()
        aws.reset()


def test_signing_in_refreshing_and_out_answer_as_documented(served: Served) -> None:
    """The success answers of the token flow, which the fuzzer cannot reach without a password, and a lockout."""
    from chalicelib.auth.users import create_user

    def call(path: str, method: str, body: dict[str, Any], token: str | None = None) -> Any:
        case = schema[path][method].Case(body=body, headers={"Authorization": f"Bearer {token}"} if token else {})
        return case.call_and_validate(base_url=served.url, checks=CHECKS)

    pair = call("/auth/login", "POST", {"username": ADMIN, "password": ADMIN_PASSWORD})
    assert pair.status_code == 200
    renewed = call("/auth/refresh", "POST", {"refresh_token": pair.json()["refresh_token"]})
    assert renewed.status_code == 200 and renewed.json()["user"]["username"] == ADMIN
    access, refresh = renewed.json()["access_token"], renewed.json()["refresh_token"]
    assert call("/auth/logout", "POST", {"refresh_token": refresh}, access).status_code == 204
    assert call("/auth/refresh", "POST", {"refresh_token": refresh}).status_code == 401

    create_user("fuzz-locked", ADMIN_PASSWORD)
    wrong = {"username": "fuzz-locked", "password": "wrong"}
    answers = [call("/auth/login", "POST", wrong) for _ in range(LOCK_AFTER + 1)]
    assert [a.status_code for a in answers] == [401] * LOCK_AFTER + [429]
    assert int(answers[-1].headers["retry-after"][0]) >= 1


@schema.parametrize()
def test_the_api_answers_as_its_document_says(case: schemathesis.Case, served: Served) -> None:
    case.call_and_validate(base_url=served.url, headers=served.headers, checks=CHECKS)

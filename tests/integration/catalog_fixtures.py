"""The catalog on the local runtime against the sample TMDB: fixtures shared by the catalog tests."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chalice.test import Client

import app as app_module
from chalicelib.settings import get_settings
from infra.local.runtime import LocalRuntime
from infra.local.upstreams.tmdb import SampleTMDB
from tests.integration.platform_fixtures import fast

CATALOG_QUEUES = ("catalog", "refresh", "maintenance")


@pytest.fixture
def sample_tmdb(restore_environ: None) -> Iterator[SampleTMDB]:
    """The sample TMDB, and the app's settings pointing at it (a generous rate limit: tests wait on it)."""
    with SampleTMDB(port=0) as sample:
        os.environ.update(
            TMDB_BASE_URL=sample.url, TMDB_API_KEY=sample.api_key, TMDB_RATE_LIMIT="200", TMDB_TIMEOUT="2"
        )
        os.environ.pop("TMDB_TOKEN", None)
        yield sample


@pytest.fixture
def catalog(platform: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB) -> Callable[..., LocalRuntime]:
    """Start the local runtime on the catalog's queues (pollers on unless `run_pollers=False`)."""

    def start(**options: Any) -> LocalRuntime:
        return platform(*(fast(name) for name in CATALOG_QUEUES), **options)

    return start


VIEWER = "viewer"


def signed_in(username: str = VIEWER, role: str = "user") -> dict[str, str]:
    """An Authorization header of `username` (created with `role` the first time), as a signed-in client sends."""
    from chalicelib.auth import tokens, users

    get_settings()  # read now: Chalice's test client sets the config file's STAGE=dev during its requests
    user = users.get(username, consistent=True) or users.create_user(username, "Correct-Horse-Battery-9", role)
    return {"Authorization": f"Bearer {tokens.issue_access(user)[0]}"}


@pytest.fixture
def api() -> Iterator[Callable[..., tuple[int, Any]]]:
    """The real app through Chalice's test client: `api("GET", "/movies/1", headers=...)` -> (status, JSON body).
    Without `headers`, as a signed-in user ("viewer", role user); `headers={}` sends none."""
    with Client(app_module.app) as client:

        def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
            kwargs: dict[str, Any] = {"headers": signed_in() if headers is None else dict(headers)}
            if body is not None:
                kwargs["body"] = json.dumps(body)
                kwargs["headers"]["Content-Type"] = "application/json"
            response = getattr(client.http, method.lower())(path, **kwargs)
            return response.status_code, json.loads(response.body) if response.body else None

        yield call

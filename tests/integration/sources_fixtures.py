"""Sources on the local runtime: the sample YTS (five mirrors) and a sample Torznab indexer next to the sample
TMDB, with the app's settings pointing at them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.settings import reset_settings
from infra.local.runtime import LocalRuntime
from infra.local.upstreams.tmdb import SampleTMDB
from infra.local.upstreams.torznab import SampleTorznab
from infra.local.upstreams.yts import SampleYTS
from tests.integration.platform_fixtures import fast

SOURCE_QUEUES = ("catalog", "refresh", "sources", "maintenance", "torrent")


@pytest.fixture
def sample_yts(sample_tmdb: SampleTMDB) -> Iterator[SampleYTS]:
    """Every mirror up (tests break the ones they need broken), the five of them in the settings, in order."""
    with SampleYTS(modes={}) as yts:
        os.environ.update(
            YTS_MIRRORS=",".join(yts.mirror_urls[name] for name in yts.mirrors),
            YTS_REQUESTS_PER_MINUTE="6000",
            YTS_TIMEOUT="2",
            TRACKERS="udp://127.0.0.1:6969/announce",
        )
        reset_settings()
        yield yts


@pytest.fixture
def sample_torznab(sample_yts: SampleYTS) -> Iterator[SampleTorznab]:
    with SampleTorznab() as indexer:
        yield indexer


@pytest.fixture
def sources(
    platform: Callable[..., LocalRuntime], sample_yts: SampleYTS, sample_torznab: SampleTorznab
) -> Callable[..., LocalRuntime]:
    """Start the local runtime on the catalog's and the sources' queues (pollers on unless run_pollers=False); the
    `torrent` queue is the streamer's: polled only with `torrent_worker=True`, through its VPN gate."""

    def start(**options: Any) -> LocalRuntime:
        options.setdefault("torrent_worker", False)
        specs = [fast(name, consumer="streamer" if name == "torrent" else "lambda") for name in SOURCE_QUEUES]
        return platform(*specs, **options)

    return start

"""Fixtures for every integration test: the local runtime on the emulator, the catalog on the sample TMDB, the
sources on the sample YTS and Torznab."""

from tests.integration.catalog_fixtures import api, catalog, sample_tmdb
from tests.integration.platform_fixtures import platform
from tests.integration.sources_fixtures import sample_torznab, sample_yts, sources
from tests.integration.tracker_fixtures import make_seeder, opentracker, seeder

__all__ = [
    "api",
    "catalog",
    "make_seeder",
    "opentracker",
    "platform",
    "sample_tmdb",
    "sample_torznab",
    "sample_yts",
    "seeder",
    "sources",
]

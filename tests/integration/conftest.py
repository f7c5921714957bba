"""Fixtures for every integration test: the local runtime on the emulator, and the catalog on the sample TMDB."""

from tests.integration.catalog_fixtures import api, catalog, sample_tmdb
from tests.integration.platform_fixtures import platform

__all__ = ["api", "catalog", "platform", "sample_tmdb"]

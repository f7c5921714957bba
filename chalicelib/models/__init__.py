"""PynamoDB models, one module per aggregate. `all_models()` is the list infra code provisions."""

from __future__ import annotations

from typing import Any


def all_models() -> list[Any]:
    from chalicelib.models.auth import AuditEvent, UserItem
    from chalicelib.models.cache import CachedResponse
    from chalicelib.models.catalog import CatalogItem
    from chalicelib.models.jobs import JobItem
    from chalicelib.models.sources import SourceItem

    return [JobItem, CatalogItem, CachedResponse, SourceItem, UserItem, AuditEvent]

"""The one clock. Domain code takes `now` as an argument defaulting to this, so tests can pass their own."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)

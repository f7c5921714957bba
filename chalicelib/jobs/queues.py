"""Queue specs: the one source of truth for every SQS queue.

`app.py` registers one consumer per Lambda-consumed queue from these specs, `infra/cdk` creates the
queues, DLQs, event source mappings and Lambda timeouts from them, and `infra/local` provisions and polls
the same queues with the same rules. Change a number here and all three follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from chalicelib.settings import Settings, get_settings

Consumer = Literal["lambda", "streamer"]

# Lambda's limits for SQS event source mappings and functions.
MIN_MAX_CONCURRENCY = 2
MAX_MAX_CONCURRENCY = 1000
MAX_HANDLER_TIMEOUT = 900
MAX_VISIBILITY_TIMEOUT = 43_200
VISIBILITY_FACTOR = 6  # AWS: visibility timeout >= 6x the function timeout


@dataclass(frozen=True)
class QueueSpec:
    name: str
    batch_size: int
    max_concurrency: int
    handler_timeout: int
    visibility_timeout: int
    max_receive_count: int
    max_batching_window: int = 0
    fifo: bool = False
    consumer: Consumer = "lambda"
    retention_seconds: int = 4 * 24 * 3600
    dlq_retention_seconds: int = 14 * 24 * 3600
    description: str = ""

    def __post_init__(self) -> None:
        def check(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"queue {self.name!r}: {what}")

        check(self.name.replace("-", "").isalnum() and self.name.islower(), "name must be lower-case a-z0-9-")
        check(1 <= self.batch_size <= 10, "batch_size must be 1..10")
        check(0 <= self.max_batching_window <= 300, "max_batching_window must be 0..300 s")
        check(
            MIN_MAX_CONCURRENCY <= self.max_concurrency <= MAX_MAX_CONCURRENCY,
            f"max_concurrency must be {MIN_MAX_CONCURRENCY}..{MAX_MAX_CONCURRENCY} (Lambda's range)",
        )
        check(1 <= self.handler_timeout <= MAX_HANDLER_TIMEOUT, "handler_timeout must be 1..900 s")
        check(
            VISIBILITY_FACTOR * self.handler_timeout <= self.visibility_timeout <= MAX_VISIBILITY_TIMEOUT,
            f"visibility_timeout must be >= {VISIBILITY_FACTOR}x handler_timeout and <= {MAX_VISIBILITY_TIMEOUT}",
        )
        check(1 <= self.max_receive_count <= 1000, "max_receive_count must be 1..1000")
        check(60 <= self.retention_seconds <= 1_209_600, "retention_seconds must be 60..1209600")
        check(60 <= self.dlq_retention_seconds <= 1_209_600, "dlq_retention_seconds must be 60..1209600")

    # Names are derived from the settings' stage so every stage has its own queues.
    def queue_name(self, settings: Settings | None = None) -> str:
        base = (settings or get_settings()).resource_name(self.name)
        return f"{base}.fifo" if self.fifo else base

    def dlq_name(self, settings: Settings | None = None) -> str:
        base = (settings or get_settings()).resource_name(f"{self.name}-dlq")
        return f"{base}.fifo" if self.fifo else base

    @property
    def consumer_name(self) -> str:
        """The Lambda function (Chalice handler) name that consumes this queue."""
        return f"consume_{self.name.replace('-', '_')}"


QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec(
        name="catalog",
        batch_size=5,
        max_batching_window=1,
        max_concurrency=5,
        handler_timeout=120,
        visibility_timeout=720,
        max_receive_count=5,
        description="TMDB sync: lists, movie and show details, seasons, genres",
    ),
    QueueSpec(
        name="refresh",
        batch_size=1,
        max_concurrency=6,
        handler_timeout=120,
        visibility_timeout=720,
        max_receive_count=5,
        description="Refreshes users asked for: at most 6 at once, never behind a bulk sync's backlog",
    ),
    QueueSpec(
        name="sources",
        batch_size=10,
        max_batching_window=1,
        max_concurrency=10,
        handler_timeout=60,
        visibility_timeout=360,
        max_receive_count=5,
        description="Torrent source discovery (YTS, Torznab) and ranking",
    ),
    QueueSpec(
        name="subtitles",
        batch_size=5,
        max_concurrency=2,
        handler_timeout=120,
        visibility_timeout=720,
        max_receive_count=5,
        description="Subtitle search and download",
    ),
    QueueSpec(
        name="searches",
        batch_size=5,
        max_concurrency=2,
        handler_timeout=120,
        visibility_timeout=720,
        max_receive_count=5,
        description="Backlog searches on users' Sonarr/Radarr",
    ),
    QueueSpec(
        name="maintenance",
        batch_size=1,
        max_concurrency=2,
        handler_timeout=900,
        visibility_timeout=5400,
        max_receive_count=3,
        description="Housekeeping, migrations and other platform jobs",
    ),
    QueueSpec(
        name="torrent",
        batch_size=10,
        max_concurrency=4,
        handler_timeout=300,
        visibility_timeout=1800,
        max_receive_count=5,
        consumer="streamer",
        description="Torrent metadata and tracker scrape, consumed by the streamer container",
    ),
)


def lambda_queues() -> tuple[QueueSpec, ...]:
    return tuple(q for q in QUEUES if q.consumer == "lambda")


def get_queue(name: str) -> QueueSpec:
    for spec in QUEUES:
        if spec.name == name:
            return spec
    raise KeyError(name)

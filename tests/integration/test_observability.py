"""Logs and metrics of a job run: JSON log lines carrying the job id and correlation id, and EMF metrics per
job name (started, succeeded, failed, retried, duration, queue age at start)."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from chalicelib.jobs import enqueue
from chalicelib.jobs.consumer import consume
from chalicelib.jobs.queues import get_queue
from chalicelib.jobs.registry import JobContext, job
from chalicelib.jobs.retry import Retry
from chalicelib.observability import logger
from chalicelib.settings import reset_settings
from infra.local.runtime import LocalRuntime
from tests.factories import sqs_record
from tests.integration.platform_fixtures import fast, platform

__all__ = ["platform"]


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines


@contextmanager
def log_lines() -> Iterator[io.StringIO]:
    """What the app's logger writes, formatted as on Lambda (its own handler keeps the stdout of import time)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    try:
        yield buffer
    finally:
        logger._logger.removeHandler(handler)


def emf_metrics(lines: list[dict[str, Any]]) -> dict[str, list[tuple[float, str]]]:
    """Metric name -> [(value, job dimension)] from the EMF documents among `lines`."""
    found: dict[str, list[tuple[float, str]]] = {}
    for doc in lines:
        for directive in doc.get("_aws", {}).get("CloudWatchMetrics", []):
            assert directive["Namespace"] == "Projectionist"
            for metric in directive["Metrics"]:
                value = doc[metric["Name"]]
                for one in value if isinstance(value, list) else [value]:
                    found.setdefault(metric["Name"], []).append((float(one), doc.get("job", "")))
    return found


def test_a_job_run_logs_with_its_ids_and_emits_metrics_per_job_name(
    platform: Callable[..., LocalRuntime], capsys: pytest.CaptureFixture[str]
) -> None:
    @job("it.observed", queue="catalog", retry=Retry(max_attempts=3, base=1, cap=1))
    def observed(ctx: JobContext, fail: bool = False) -> None:
        logger.info("inside the job")
        if fail:
            raise RuntimeError("fails")

    platform(fast("catalog"), run_pollers=False)
    os.environ["EMIT_METRICS"] = "true"  # the local runtime turns them off; restored by the fixture
    reset_settings()
    ok = enqueue.build("it.observed", correlation_id="corr-123")
    failing = enqueue.build("it.observed", {"fail": True})
    capsys.readouterr()

    with log_lines() as logged:
        consume({"Records": [sqs_record(ok.to_body()), sqs_record(failing.to_body())]}, None, get_queue("catalog"))

    lines = json_lines(logged.getvalue())
    inside = [line for line in lines if line.get("message") == "inside the job"]
    assert [(line["job_id"], line["correlation_id"], line["job_name"]) for line in inside] == [
        (ok.id, "corr-123", "it.observed"),
        (failing.id, failing.correlation_id, "it.observed"),
    ]
    retry_line = next(line for line in lines if str(line.get("message", "")).startswith("job failed, retrying"))
    assert retry_line["job_id"] == failing.id and retry_line["level"] == "WARNING"

    metrics = emf_metrics(json_lines(capsys.readouterr().out))  # EMF documents are printed to stdout
    assert {name: [job for _, job in values] for name, values in metrics.items()} == {
        "JobStarted": ["it.observed", "it.observed"],
        "QueueAge": ["it.observed", "it.observed"],
        "JobSucceeded": ["it.observed"],
        "JobDuration": ["it.observed"],
        "JobRetried": ["it.observed"],
    }
    assert all(value >= 0 for value, _ in metrics["QueueAge"] + metrics["JobDuration"])


def test_concurrent_batches_in_one_process_log_their_own_job_ids(platform: Callable[..., LocalRuntime]) -> None:
    # The local runtime runs several batches at once in one process (Lambda runs one per process).
    barrier = threading.Barrier(2, timeout=10)

    @job("it.interleaved", queue="catalog")
    def interleaved(ctx: JobContext, n: int) -> None:
        logger.info("before", extra={"n": n})
        barrier.wait()  # both jobs are inside their handlers now
        logger.info("after", extra={"n": n})

    platform(fast("catalog"), run_pollers=False)
    envelopes = [enqueue.build("it.interleaved", {"n": n}) for n in range(2)]

    def run(n: int) -> None:
        consume({"Records": [sqs_record(envelopes[n].to_body())]}, None, get_queue("catalog"))

    with log_lines() as logged:
        threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)

    lines = [line for line in json_lines(logged.getvalue()) if line.get("message") in ("before", "after")]
    assert len(lines) == 4
    assert all(line["job_id"] == envelopes[line["n"]].id for line in lines)

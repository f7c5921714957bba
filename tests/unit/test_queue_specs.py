"""Queue specs: validated once, and the single source the Chalice app's consumers are built from."""

from __future__ import annotations

import dataclasses

import pytest

from chalicelib.jobs.queues import QUEUES, QueueSpec, get_queue, lambda_queues
from chalicelib.settings import Settings


def spec(**overrides: object) -> QueueSpec:
    base = dict(
        name="q", batch_size=5, max_concurrency=2, handler_timeout=10, visibility_timeout=60, max_receive_count=3
    )
    base.update(overrides)
    return QueueSpec(**base)  # type: ignore[arg-type]


def test_the_platform_declares_the_queues_it_needs() -> None:
    lambda_consumed = {"catalog", "refresh", "sources", "subtitles", "searches", "maintenance"}
    assert {q.name for q in QUEUES} == lambda_consumed | {"torrent"}
    assert get_queue("torrent").consumer == "streamer"
    assert {q.name for q in lambda_queues()} == lambda_consumed
    assert get_queue("refresh").max_concurrency == 6  # user-triggered refreshes: at most 6 at once


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_concurrency": 1}, "max_concurrency"),
        ({"max_concurrency": 1001}, "max_concurrency"),
        ({"visibility_timeout": 59}, "6x handler_timeout"),
        ({"batch_size": 11}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"handler_timeout": 901, "visibility_timeout": 6000}, "handler_timeout"),
        ({"max_receive_count": 0}, "max_receive_count"),
        ({"name": "Bad Name"}, "name"),
    ],
)
def test_a_spec_outside_lambda_and_sqs_limits_is_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**overrides)


def test_every_declared_spec_keeps_visibility_at_least_six_handler_timeouts() -> None:
    for q in QUEUES:
        assert q.visibility_timeout >= 6 * q.handler_timeout, q.name
        # and a copy with a shorter visibility would not be accepted
        with pytest.raises(ValueError):
            dataclasses.replace(q, visibility_timeout=6 * q.handler_timeout - 1)


def test_names_are_per_stage_and_fifo_queues_end_in_fifo() -> None:
    settings = Settings(stage="prod")
    assert spec().queue_name(settings) == "projectionist-prod-q"
    assert spec().dlq_name(settings) == "projectionist-prod-q-dlq"
    assert spec(fifo=True).queue_name(settings) == "projectionist-prod-q.fifo"
    assert spec(fifo=True).dlq_name(settings) == "projectionist-prod-q-dlq.fifo"


def test_app_registers_one_consumer_per_lambda_queue_from_the_specs() -> None:
    from chalice.app import SQSEventConfig

    import app as app_module

    sources = {s.name: s for s in app_module.app.event_sources if isinstance(s, SQSEventConfig)}
    assert set(sources) == {q.consumer_name for q in lambda_queues()}
    for q in lambda_queues():
        source = sources[q.consumer_name]
        assert source.queue == q.queue_name()
        assert source.batch_size == q.batch_size
        assert source.maximum_concurrency == q.max_concurrency
        assert source.maximum_batching_window_in_seconds == q.max_batching_window
        assert source.handler_string == f"app.{q.consumer_name}"
        assert getattr(app_module, q.consumer_name) is app_module.app.handler_map[q.consumer_name]

"""The local runtime against the emulator: real queues with DLQs, the poller, the very same consumer code.

The consumers here dispatch without the job platform (`run_directly`), so a job's exception fails its SQS
record and SQS's own redelivery and redrive are what is tested.

Queues here use a 1 s handler timeout, so their visibility timeout is the spec minimum of 6 s; tests that
need a redelivery wait for it (a few seconds, not minutes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chalice import Chalice

from chalicelib import aws
from chalicelib.jobs.consumer import register_consumers
from chalicelib.jobs.envelope import Envelope
from chalicelib.jobs.queues import QueueSpec
from chalicelib.jobs.registry import JobContext, job, registry
from chalicelib.settings import Settings
from infra.local.runtime import LocalRuntime, RuntimeOptions
from tests.conftest import unique_stage
from tests.factories import run_directly
from tests.integration.platform_fixtures import Probe, wait_for


def fast_spec(name: str, **overrides: Any) -> QueueSpec:
    values: dict[str, Any] = dict(
        name=name, batch_size=10, max_concurrency=2, handler_timeout=1, visibility_timeout=6, max_receive_count=2
    )
    values.update(overrides)
    return QueueSpec(**values)


@pytest.fixture
def recorder() -> Iterator[Probe]:
    rec = Probe()

    @job("it.work", queue="catalog")
    def work(ctx: JobContext, n: int, fail: bool = False, sleep: float = 0.0) -> int:
        with rec:
            try:
                time.sleep(sleep)
                if fail:
                    raise RuntimeError(f"{n} fails")
                return n
            finally:
                rec.record(n)

    yield rec
    registry.unregister("it.work")


@pytest.fixture
def start_runtime(restore_environ: None) -> Iterator[Callable[..., LocalRuntime]]:
    started: list[LocalRuntime] = []

    def start(*specs: QueueSpec, **options: Any) -> LocalRuntime:
        def app_factory() -> Chalice:
            # A Chalice app with consumers for the test queues, registered the way app.py registers its own.
            app = Chalice(app_name="runtime-test")
            register_consumers(app, specs, dispatcher=run_directly)
            return app

        options.setdefault("stage", unique_stage())
        opts = RuntimeOptions(
            data_dir=None,
            emulator_port=0,
            serve_api=False,
            run_ticker=False,
            queues=specs,
            app_factory=app_factory,
            **options,
        )
        runtime = LocalRuntime(opts)
        runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.stop()


def send(spec: QueueSpec, settings: Settings, bodies: list[str]) -> None:
    url = aws.queue_url(spec.queue_name(settings))
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])]
        assert not aws.sqs().send_message_batch(QueueUrl=url, Entries=entries).get("Failed")


def depth(queue_name: str) -> dict[str, int]:
    attrs = aws.sqs().get_queue_attributes(
        QueueUrl=aws.queue_url(queue_name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return {
        "visible": int(attrs["ApproximateNumberOfMessages"]),
        "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    }


def test_a_batch_of_ten_with_three_failing_leaves_exactly_the_three_for_redelivery(
    start_runtime: Callable[..., LocalRuntime], recorder: Probe
) -> None:
    spec = fast_spec("partial", max_batching_window=2, max_receive_count=5)
    runtime = start_runtime(spec, run_pollers=False)
    settings = runtime_settings()
    failing = {2, 5, 9}
    send(spec, settings, [Envelope(name="it.work", args={"n": n, "fail": n in failing}).to_body() for n in range(10)])
    # Given ten messages waiting, when the poller delivers one batch of ten to the handler,
    runtime.start_pollers()
    poller = runtime.pollers[0]
    wait_for(lambda: poller.stats.deleted + poller.stats.failed == 10, 10, "the batch to finish")
    # then the seven successes are deleted and only the three failures wait in flight for redelivery.
    assert poller.stats.batches == 1 and poller.stats.records == 10
    assert poller.stats.deleted == 7 and poller.stats.failed == 3
    assert depth(spec.queue_name(settings)) == {"visible": 0, "in_flight": 3}
    # After the visibility timeout exactly those three come back.
    poller.stop()
    redelivered = receive_all(spec.queue_name(settings), wait_seconds=8)
    assert sorted(Envelope.parse(m["Body"]).args["n"] for m in redelivered) == sorted(failing)


def receive_all(queue_name: str, wait_seconds: float) -> list[dict[str, Any]]:
    url = aws.queue_url(queue_name)
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        response = aws.sqs().receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
        )
        got.extend(response.get("Messages", []))
        if got and not response.get("Messages"):
            break
    return got


def test_a_record_failing_every_time_lands_in_the_dlq_after_max_receive_count(
    start_runtime: Callable[..., LocalRuntime], recorder: Probe
) -> None:
    spec = fast_spec("poison", max_receive_count=2, batch_size=5)
    start_runtime(spec)
    settings = runtime_settings()
    send(spec, settings, [Envelope(name="it.work", args={"n": 1, "fail": True}).to_body(), "{not an envelope"])
    send(spec, settings, [Envelope(name="it.work", args={"n": 2}).to_body()])

    wait_for(lambda: depth(spec.dlq_name(settings))["visible"] == 2, 25, "both bad records to reach the DLQ")
    dead = receive_all(spec.dlq_name(settings), wait_seconds=2)
    bodies = sorted(m["Body"] for m in dead)
    assert "{not an envelope" in bodies
    assert any(Envelope.parse(b).args == {"n": 1, "fail": True} for b in bodies if b.startswith('{"'))
    # Each was received exactly max_receive_count times by the handler before SQS moved it.
    assert recorder.calls.count(1) == spec.max_receive_count
    # The good record was not held back by the bad ones, and ran once.
    assert recorder.calls.count(2) == 1
    assert depth(spec.queue_name(settings)) == {"visible": 0, "in_flight": 0}


def test_max_concurrency_two_never_runs_more_than_two_handlers_at_once(
    start_runtime: Callable[..., LocalRuntime], recorder: Probe
) -> None:
    spec = fast_spec("slow", batch_size=1, max_concurrency=2)
    runtime = start_runtime(spec, run_pollers=False)
    settings = runtime_settings()
    send(spec, settings, [Envelope(name="it.work", args={"n": n, "sleep": 0.2}).to_body() for n in range(20)])
    runtime.start_pollers()
    wait_for(lambda: len(recorder.calls) == 20, 30, "20 slow jobs")
    # Measured inside the handlers, not taken from the poller's own bookkeeping.
    assert recorder.max_running == 2
    assert sorted(recorder.calls) == list(range(20))
    assert runtime.pollers[0].stats.max_in_flight == 2


def test_stopping_lets_handlers_in_flight_finish(start_runtime: Callable[..., LocalRuntime], recorder: Probe) -> None:
    spec = fast_spec("drain", batch_size=1, max_concurrency=2)
    runtime = start_runtime(spec)
    settings = runtime_settings()
    send(spec, settings, [Envelope(name="it.work", args={"n": n, "sleep": 0.8}).to_body() for n in range(2)])
    wait_for(lambda: recorder.running == 2, 10, "two handlers to start")
    runtime.pollers[0].stop(wait=True)
    assert recorder.running == 0 and sorted(recorder.calls) == [0, 1]
    assert depth(spec.queue_name(settings)) == {"visible": 0, "in_flight": 0}  # both deleted, none lost


def runtime_settings() -> Settings:
    from chalicelib.settings import get_settings

    return get_settings()

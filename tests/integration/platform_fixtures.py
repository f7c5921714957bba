"""A local runtime running the real job platform on fast test queues, for platform tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chalice import Chalice

from chalicelib.jobs.consumer import register_consumers
from chalicelib.jobs.queues import QueueSpec
from chalicelib.jobs.registry import registry
from infra.local.runtime import LocalRuntime, RuntimeOptions
from tests.conftest import unique_stage


def fast(name: str, **overrides: Any) -> QueueSpec:
    """A queue named like a real one (so jobs registered on it resolve), with timings fit for tests."""
    values: dict[str, Any] = dict(
        name=name, batch_size=10, max_concurrency=4, handler_timeout=5, visibility_timeout=30, max_receive_count=3
    )
    values.update(overrides)
    return QueueSpec(**values)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Probe:
    """Counts handler runs and overlap, thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[Any] = []
        self.running = 0
        self.max_running = 0

    def __enter__(self) -> Probe:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.running -= 1

    def record(self, value: Any) -> None:
        with self.lock:
            self.calls.append(value)


@pytest.fixture
def platform(restore_environ: None) -> Iterator[Callable[..., LocalRuntime]]:
    started: list[LocalRuntime] = []
    names_before = set(registry.names())

    def start(*specs: QueueSpec, **options: Any) -> LocalRuntime:
        def app_factory() -> Chalice:
            app = Chalice(app_name="platform-test")
            register_consumers(app, specs)
            return app

        options.setdefault("stage", unique_stage())
        runtime = LocalRuntime(
            RuntimeOptions(
                data_dir=None,
                emulator_port=0,
                serve_api=False,
                run_ticker=False,
                queues=specs,
                app_factory=app_factory,
                **options,
            )
        )
        runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.stop()
    for name in set(registry.names()) - names_before:
        registry.unregister(name)

"""The job registry: job names mapped to their handlers, filled by the `@job` decorator."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import UnknownJobError
from chalicelib.jobs.envelope import Envelope
from chalicelib.jobs.queues import get_queue


@dataclass(frozen=True)
class JobContext:
    """What a job handler gets besides its arguments."""

    envelope: Envelope
    lambda_context: Any = None

    def remaining_seconds(self) -> float | None:
        getter = getattr(self.lambda_context, "get_remaining_time_in_millis", None)
        return getter() / 1000.0 if getter else None


Handler = Callable[..., Any]


@dataclass(frozen=True)
class JobDefinition:
    name: str
    queue: str
    handler: Handler


class Registry:
    def __init__(self) -> None:
        self._jobs: dict[str, JobDefinition] = {}
        self._lock = threading.Lock()

    def register(self, definition: JobDefinition) -> None:
        get_queue(definition.queue)  # an unknown queue fails at import, not at run time
        with self._lock:
            existing = self._jobs.get(definition.name)
            if existing is not None and existing.handler is not definition.handler:
                raise ValueError(f"job {definition.name!r} is registered twice")
            self._jobs[definition.name] = definition

    def unregister(self, name: str) -> None:
        with self._lock:
            self._jobs.pop(name, None)

    def get(self, name: str) -> JobDefinition:
        try:
            return self._jobs[name]
        except KeyError:
            raise UnknownJobError(f"unknown job {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._jobs)


registry = Registry()


def job(name: str, *, queue: str) -> Callable[[Handler], Handler]:
    """Register `handler(ctx, **args)` as the job `name`, run from `queue`."""

    def decorate(handler: Handler) -> Handler:
        registry.register(JobDefinition(name=name, queue=queue, handler=handler))
        return handler

    return decorate

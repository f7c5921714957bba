"""Job definitions: a registry filled by the `@job` decorator.

    @job("catalog.refresh_show", queue="catalog", retry=Retry(max_attempts=20, base=30, cap=3600),
         timeout=600, unique=UniqueFor(hours=2), lock=LockOn("show:{show_id}", when_held="requeue"))
    def refresh_show(ctx: JobContext, show_id: int, force: bool = False) -> dict: ...

A job's arguments are the handler's parameters after `ctx`; their type hints become a pydantic model that
validates the arguments at enqueue time and again at run time, so bad arguments fail at once.
"""

from __future__ import annotations

import inspect
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model
from pydantic import ValidationError as PydanticValidationError

from chalicelib.errors import UnknownJobError, ValidationError
from chalicelib.jobs.envelope import JOB_NAME_PATTERN, Envelope
from chalicelib.jobs.queues import get_queue
from chalicelib.jobs.retry import Retry

# DynamoDB allows 100 items per transaction; the run record, its counters and a batch take 3.
MAX_JOB_WRITES = 90


@dataclass(frozen=True)
class JobContext:
    """What a job handler gets besides its arguments."""

    envelope: Envelope
    lambda_context: Any = None
    previous_result: Any = None  # the result of the job this one continues (`then=`)
    # DynamoDB writes committed in the same transaction that records the job's success: exactly once,
    # however often the job is delivered or crashes. See `add_write`.
    writes: list[Callable[[Any], None]] = field(default_factory=list)

    def add_write(self, write: Callable[[Any], None]) -> None:
        """Commit `write(tx)` (a PynamoDB TransactWrite) only if, and when, this job is recorded succeeded."""
        if len(self.writes) >= MAX_JOB_WRITES:
            raise ValidationError(f"a job can add at most {MAX_JOB_WRITES} transactional writes")
        self.writes.append(write)

    @property
    def job_id(self) -> str:
        return self.envelope.id

    @property
    def attempt(self) -> int:
        return self.envelope.attempt

    def remaining_seconds(self) -> float | None:
        getter = getattr(self.lambda_context, "get_remaining_time_in_millis", None)
        return getter() / 1000.0 if getter else None


def _render_key(template: str, args: dict[str, Any]) -> str:
    try:
        return template.format(**args)
    except (KeyError, IndexError) as exc:
        raise ValidationError(f"key template {template!r} needs argument {exc}") from None


@dataclass(frozen=True)
class UniqueFor:
    """At most one queued-or-running job per fingerprint, for at most `seconds` (the fingerprint's TTL).

    The fingerprint is the job name plus its canonical arguments, or `key` (a template over the arguments).
    """

    seconds: float = 0
    minutes: float = 0
    hours: float = 0
    key: str | None = None
    ttl: float = field(init=False)

    def __post_init__(self) -> None:
        ttl = self.seconds + 60 * self.minutes + 3600 * self.hours
        if not 1 <= ttl <= 30 * 24 * 3600:
            raise ValueError("UniqueFor needs a lifetime between 1 second and 30 days")
        object.__setattr__(self, "ttl", ttl)

    def fingerprint(self, name: str, args: dict[str, Any]) -> str:
        import hashlib
        import json

        if self.key is not None:
            return f"{name}:{_render_key(self.key, args)}"
        canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)
        return f"{name}:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


@dataclass(frozen=True)
class LockOn:
    """Run at most one job holding `key` (a template over the arguments) at a time."""

    key: str
    when_held: Literal["skip", "requeue"] = "skip"
    lease: float = 60.0  # seconds; renewed while the job runs
    requeue_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.when_held not in ("skip", "requeue"):
            raise ValueError("when_held must be 'skip' or 'requeue'")
        if not 1 <= self.lease <= 3600 or not 0 <= self.requeue_delay <= 900:
            raise ValueError("lease must be 1..3600 s and requeue_delay 0..900 s")

    def render(self, args: dict[str, Any]) -> str:
        return _render_key(self.key, args)


Handler = Callable[..., Any]


def _args_model(name: str, handler: Handler) -> type[BaseModel]:
    """A pydantic model of the handler's parameters after `ctx`, from its type hints."""
    hints = typing.get_type_hints(handler)
    params = list(inspect.signature(handler).parameters.values())[1:]
    fields: dict[str, Any] = {}
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(f"job {name}: parameters must be plain keyword parameters, not {param}")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    model: type[BaseModel] = create_model(
        f"Args_{name.replace('.', '_')}", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


@dataclass(frozen=True)
class JobDefinition:
    name: str
    queue: str
    handler: Handler
    retry: Retry = field(default_factory=Retry)
    timeout: int = 60
    unique: UniqueFor | None = None
    lock: LockOn | None = None
    args_model: type[BaseModel] | None = None

    def validate_args(self, args: dict[str, Any] | None) -> dict[str, Any]:
        """Canonical, JSON-ready arguments, or a ValidationError naming each problem."""
        if self.args_model is None:
            return dict(args or {})
        try:
            return self.args_model.model_validate(args or {}).model_dump(mode="json")
        except PydanticValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors())
            raise ValidationError(f"invalid arguments for job {self.name}: {problems}") from None


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


def job(
    name: str,
    *,
    queue: str,
    retry: Retry | None = None,
    timeout: int | None = None,
    unique: UniqueFor | None = None,
    lock: LockOn | None = None,
    jobs: Registry | None = None,
) -> Callable[[Handler], Handler]:
    """Register `handler(ctx, **args)` as the job `name`, run from `queue`."""
    import re

    if not re.match(JOB_NAME_PATTERN, name):
        raise ValueError(f"job name {name!r} must look like 'area.action'")
    spec = get_queue(queue)
    run_timeout = timeout if timeout is not None else spec.handler_timeout
    if not 1 <= run_timeout <= spec.handler_timeout:
        raise ValueError(f"job {name}: timeout must be 1..{spec.handler_timeout} s (queue {queue}'s handler timeout)")

    def decorate(handler: Handler) -> Handler:
        definition = JobDefinition(
            name=name,
            queue=queue,
            handler=handler,
            retry=retry or Retry(),
            timeout=run_timeout,
            unique=unique,
            lock=lock,
            args_model=_args_model(name, handler),
        )
        (jobs or registry).register(definition)
        return handler

    return decorate

"""The job envelope: what travels in an SQS message body."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from chalicelib.errors import InvalidEnvelopeError

JOB_NAME_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"


def new_id() -> str:
    return uuid.uuid4().hex


class JobRequest(BaseModel):
    """A job to run later: a continuation, or one child of a batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=JOB_NAME_PATTERN, max_length=128)
    args: dict[str, Any] = Field(default_factory=dict)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    name: str = Field(pattern=JOB_NAME_PATTERN, max_length=128)
    args: dict[str, Any] = Field(default_factory=dict)
    attempt: int = Field(default=1, ge=1)
    enqueued_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    correlation_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    chain_id: str | None = None
    batch_id: str | None = None
    # The fingerprint a unique job holds while queued or running; released when the job ends.
    unique_key: str | None = None
    # Jobs to run, in order, after this one succeeds; each gets the previous one's result.
    then: list[JobRequest] = Field(default_factory=list)
    previous_result: Any = None
    # The periodic task that started this job, whose last-run state the job's end updates.
    task: str | None = None

    def to_body(self) -> str:
        return self.model_dump_json(exclude_defaults=False)

    def next_attempt(self) -> Envelope:
        return self.model_copy(update={"attempt": self.attempt + 1})

    @classmethod
    def parse(cls, body: str | bytes | None) -> Envelope:
        """Parse an SQS message body, or raise InvalidEnvelopeError saying what is wrong."""
        if not body:
            raise InvalidEnvelopeError("message body is empty")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidEnvelopeError(f"message body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidEnvelopeError("message body is not a JSON object")
        try:
            return cls.model_validate(data)
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidEnvelopeError(f"message body is not a job envelope: {problems}") from exc

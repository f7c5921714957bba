"""Typed settings, read from the environment once and validated.

This is the only module that reads the environment. Everything else asks `get_settings()`.
Resource names follow one rule, `{app_name}-{stage}-{logical}`, so `app.py` (which Chalice imports when it
packages the app), the CDK stack and the local runtime all agree on them without a second list.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    app_name: str = Field(default="projectionist", pattern=r"^[a-z][a-z0-9-]{1,30}$")
    stage: str = Field(default="dev", pattern=r"^[a-z][a-z0-9]{0,15}$")
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    # None on AWS; the emulator's URL under the local runtime or LocalStack.
    aws_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    # A per-service override, as botocore's own AWS_ENDPOINT_URL_<SERVICE> (e.g. SQS and S3 on LocalStack,
    # DynamoDB on the embedded emulator).
    aws_endpoint_url_dynamodb: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL_DYNAMODB")
    aws_endpoint_url_sqs: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL_SQS")
    aws_endpoint_url_s3: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL_S3")
    # Timeouts for every AWS client, so a dead endpoint fails fast instead of hanging a request.
    aws_connect_timeout: float = Field(default=3.0, gt=0)
    aws_read_timeout: float = Field(default=30.0, gt=0)
    aws_max_attempts: int = Field(default=3, ge=1, le=10)
    # On AWS the stack passes the bucket's generated name (bucket names are global); locally it is derived.
    bucket: str | None = Field(default=None, validation_alias="BUCKET_NAME")
    enable_scheduler: bool = True
    # The static token that guards /admin until accounts exist; unset, the admin API refuses every call.
    admin_token: SecretStr | None = None
    # CloudWatch EMF metrics on stdout (the local runtime turns them off: they are noise in a terminal).
    emit_metrics: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator(
        "aws_endpoint_url", "aws_endpoint_url_dynamodb", "aws_endpoint_url_sqs", "aws_endpoint_url_s3", mode="before"
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    def endpoint_url(self, service: str) -> str | None:
        """The endpoint for one AWS service: its own override, else the shared one, else AWS itself."""
        specific = getattr(self, f"aws_endpoint_url_{service}", None)
        return specific or self.aws_endpoint_url

    @property
    def resource_prefix(self) -> str:
        return f"{self.app_name}-{self.stage}"

    def resource_name(self, logical: str) -> str:
        """Physical name of a table, queue or bucket, e.g. `projectionist-dev-catalog`."""
        return f"{self.resource_prefix}-{logical}"

    @property
    def bucket_name(self) -> str:
        return self.bucket or self.resource_name("media")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the local runtime change the environment)."""
    get_settings.cache_clear()

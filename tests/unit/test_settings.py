"""Settings are read from the environment once, validated, and give every resource its name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chalicelib.settings import Settings


def test_defaults_name_resources_for_the_dev_stage() -> None:
    settings = Settings()
    assert settings.stage == "dev"
    assert settings.resource_name("jobs") == "projectionist-dev-jobs"
    assert settings.bucket_name == "projectionist-dev-media"
    assert settings.endpoint_url("sqs") is None


def test_the_environment_sets_stage_endpoint_and_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "prod")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8001")
    monkeypatch.setenv("BUCKET_NAME", "generated-bucket-123")
    monkeypatch.setenv("ENABLE_SCHEDULER", "false")
    settings = Settings()
    assert settings.resource_name("catalog") == "projectionist-prod-catalog"
    assert settings.endpoint_url("sqs") == "http://127.0.0.1:4566"
    assert settings.endpoint_url("dynamodb") == "http://127.0.0.1:8001"
    assert settings.bucket_name == "generated-bucket-123"
    assert settings.enable_scheduler is False


@pytest.mark.parametrize("name, value", [("STAGE", "Prod Stage"), ("LOG_LEVEL", "LOUD"), ("AWS_MAX_ATTEMPTS", "0")])
def test_invalid_settings_fail_at_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()

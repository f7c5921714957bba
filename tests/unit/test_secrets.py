"""Secrets at rest: encrypted with the configured key, readable only with it, shown masked."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from chalicelib import secrets
from chalicelib.settings import reset_settings


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = Fernet.generate_key().decode()
    monkeypatch.setenv("SECRETS_KEY", value)
    reset_settings()
    yield value
    reset_settings()


def test_a_secret_round_trips_and_its_ciphertext_does_not_contain_it(key: str) -> None:
    token = secrets.encrypt("my-api-key-123")
    assert "my-api-key-123" not in token
    assert secrets.decrypt(token) == "my-api-key-123"


def test_a_key_without_its_padding_works_the_same(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    token = secrets.encrypt("value")
    monkeypatch.setenv("SECRETS_KEY", key.rstrip("="))  # as Secrets Manager generates it
    reset_settings()
    assert secrets.decrypt(token) == "value"


def test_another_key_cannot_read_it(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    token = secrets.encrypt("value")
    monkeypatch.setenv("SECRETS_KEY", Fernet.generate_key().decode())
    reset_settings()
    with pytest.raises(secrets.SecretUnreadableError):
        secrets.decrypt(token)


def test_masks_show_at_most_the_last_four_characters() -> None:
    assert secrets.mask("abcdefghijkl") == "…ijkl"
    assert secrets.mask("short") == "…"
    assert secrets.mask(None) is None

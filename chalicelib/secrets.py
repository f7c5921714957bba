"""Secrets at rest: other services' API keys are encrypted field by field before they reach DynamoDB, never
returned by the API (only masked) and never logged.

Fernet (AES-128-CBC with an HMAC-SHA256, from `cryptography`) under SECRETS_KEY. Under `make run` the local
runtime generates that key once and keeps it in the data folder. (Envelope encryption with a KMS key on AWS
is the accounts and security issue's; until then a stage needs SECRETS_KEY set.)
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from chalicelib.errors import ProjectionistError, ServiceUnavailableError
from chalicelib.settings import get_settings


class SecretUnreadableError(ProjectionistError):
    """A stored secret does not decrypt with the current key (the key changed, or the value was altered)."""

    code = "secret_unreadable"
    permanent = True


def _fernet() -> Fernet:
    key = get_settings().secrets_key
    if key is None:
        raise ServiceUnavailableError("SECRETS_KEY is not set: secrets cannot be stored or read")
    text = key.get_secret_value().strip()
    # Secrets Manager cannot generate the trailing "=" of a Fernet key: the stack's key comes without it.
    return Fernet((text + "=" * (-len(text) % 4)).encode())


def new_key() -> str:
    return Fernet.generate_key().decode()


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadableError("a stored secret could not be decrypted with the current SECRETS_KEY") from None


def mask(plain: str | None) -> str | None:
    """What the API shows of a secret: its last four characters at most."""
    if not plain:
        return None
    return "…" + plain[-4:] if len(plain) > 8 else "…"

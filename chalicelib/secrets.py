"""Secrets at rest: other services' API keys are encrypted field by field before they reach DynamoDB, never
returned by the API (only masked) and never logged.

Two forms, told apart by a prefix, so a stage can move from one to the other without rewriting anything:

- with SECRETS_KMS_KEY_ID (on AWS): envelope encryption. Each value gets a fresh 256-bit data key from KMS
  (GenerateDataKey) and is sealed with AES-256-GCM under it; the stored text is
  `kms1.<KMS-encrypted data key>.<nonce + ciphertext>` (base64url). Reading asks KMS to decrypt the data key
  (kept in a small in-process cache, so a page of feeds costs one call per value at most once).
- otherwise: Fernet (AES-128-CBC with an HMAC-SHA256, from `cryptography`) under SECRETS_KEY. Under `make run`
  the local runtime generates that key once and keeps it in the data folder.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chalicelib import aws
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


KMS_PREFIX = "kms1."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kms(action: str, **kwargs: object) -> dict[str, bytes]:
    try:
        return getattr(aws.client("kms"), action)(**kwargs)
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailableError(f"KMS could not {action.replace('_', ' ')}: secrets are unavailable") from exc


@lru_cache(maxsize=256)
def _data_key(encrypted: bytes) -> bytes:
    return _kms("decrypt", CiphertextBlob=encrypted)["Plaintext"]


def encrypt(plain: str) -> str:
    key_id = get_settings().secrets_kms_key_id
    if key_id is None:
        return _fernet().encrypt(plain.encode()).decode()
    data_key = _kms("generate_data_key", KeyId=key_id, KeySpec="AES_256")
    nonce = os.urandom(12)
    sealed = AESGCM(data_key["Plaintext"]).encrypt(nonce, plain.encode(), KMS_PREFIX.encode())
    return f"{KMS_PREFIX}{_b64(data_key['CiphertextBlob'])}.{_b64(nonce + sealed)}"


def decrypt(token: str) -> str:
    if token.startswith(KMS_PREFIX):
        try:
            encrypted_key, _, body = token.removeprefix(KMS_PREFIX).partition(".")
            blob = _unb64(body)
            plain = AESGCM(_data_key(_unb64(encrypted_key))).decrypt(blob[:12], blob[12:], KMS_PREFIX.encode())
            return plain.decode()
        except (InvalidTag, ValueError):
            raise SecretUnreadableError("a stored secret could not be decrypted (altered, or another key)") from None
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadableError("a stored secret could not be decrypted with the current SECRETS_KEY") from None


def mask(plain: str | None) -> str | None:
    """What the API shows of a secret: its last four characters at most."""
    if not plain:
        return None
    return "…" + plain[-4:] if len(plain) > 8 else "…"

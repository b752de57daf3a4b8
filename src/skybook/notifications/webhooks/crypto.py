"""Endpoint secrets: generated, shown once, kept encrypted so the platform can still sign with them.

A hash would not do: signing needs the secret itself. The key is derived from
``SKYBOOK_SECRET_KEY`` with HKDF, so a database dump alone does not reveal any secret; changing
``SKYBOOK_SECRET_KEY`` makes the stored secrets unreadable (rotate every endpoint's secret then).
"""

from __future__ import annotations

import base64
import functools
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_PREFIX = "whsec_"  # noqa: S105  # pragma: allowlist secret (a prefix, not a secret)


def new_endpoint_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


@functools.lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"skybook webhook endpoint secrets").derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_secret(secret: str, *, secret_key: str) -> str:
    return _fernet(secret_key).encrypt(secret.encode()).decode()


def decrypt_secret(ciphertext: str, *, secret_key: str) -> str:
    """The secret back; raises ``ValueError`` when it was encrypted under another key."""
    try:
        return _fernet(secret_key).decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("the endpoint secret cannot be decrypted with the current SKYBOOK_SECRET_KEY") from exc

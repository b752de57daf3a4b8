"""Access-token signing keys rotate by kid without cutting off tokens already issued."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from skybook.identity.tokens import InvalidToken, KeyRing, TokenService

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _service(keys: str) -> TokenService:
    return TokenService(
        KeyRing.from_settings(keys, "fallback-secret-0123456789abcdef"),
        issuer="skybook",
        audience="skybook-api",
        ttl=timedelta(minutes=15),
    )


def test_a_retired_key_still_verifies_its_tokens_until_they_expire() -> None:
    before = _service("k1=first-secret-0123456789abcdef")
    token, _ = before.issue(subject=uuid.uuid4(), kind="user", session_version=1, now=NOW)
    after = _service("k2=second-secret-0123456789abcdef,k1=first-secret-0123456789abcdef")
    assert after.verify(token, now=NOW + timedelta(minutes=5)).kind == "user"
    fresh, _ = after.issue(subject=uuid.uuid4(), kind="user", session_version=1, now=NOW)
    assert '"kid":"k2"' in __import__("base64").urlsafe_b64decode(fresh.split(".")[0] + "==").decode()
    with pytest.raises(InvalidToken):
        after.verify(token, now=NOW + timedelta(minutes=16))  # expired, whatever the key


def test_once_the_retired_key_is_removed_its_tokens_stop_working() -> None:
    token, _ = _service("k1=first-secret-0123456789abcdef").issue(
        subject=uuid.uuid4(), kind="user", session_version=1, now=NOW
    )
    with pytest.raises(InvalidToken):
        _service("k2=second-secret-0123456789abcdef").verify(token, now=NOW)


def test_every_replica_derives_the_same_key_from_the_same_settings() -> None:
    token, _ = _service("k1=shared-secret-0123456789abcdef").issue(
        subject=uuid.uuid4(), kind="user", session_version=3, now=NOW
    )
    assert _service("k1=shared-secret-0123456789abcdef").verify(token, now=NOW).session_version == 3

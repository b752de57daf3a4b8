"""Receivers check a webhook with ``verify_signature``: it accepts exactly what Skybook signed, recently."""

from __future__ import annotations

import pytest

from skybook.notifications.webhooks.crypto import decrypt_secret, encrypt_secret, new_endpoint_secret
from skybook.notifications.webhooks.sender import retry_delay
from skybook.notifications.webhooks.signing import SignatureError, sign, signature_header, verify_signature

SECRET = "whsec_unit-test-secret"  # pragma: allowlist secret
OTHER = "whsec_another-secret"  # pragma: allowlist secret
BODY = b'{"id":"0193","type":"order.ticketed","data":{"record_locator":"ABC234"}}'
NOW = 1_800_000_000


def test_a_signed_body_verifies_and_returns_its_timestamp() -> None:
    header = signature_header([SECRET], NOW, BODY)
    assert header == f"t={NOW},v1={sign(SECRET, NOW, BODY)}"
    assert verify_signature(BODY, header, SECRET, now=NOW + 10) == NOW


def test_a_tampered_body_is_refused() -> None:
    header = signature_header([SECRET], NOW, BODY)
    with pytest.raises(SignatureError, match="no signature matches"):
        verify_signature(BODY.replace(b"ABC234", b"ZZZ999"), header, SECRET, now=NOW)


def test_a_changed_timestamp_is_refused() -> None:
    # The timestamp is signed too: moving it forward to pass the window breaks the signature.
    signature = sign(SECRET, NOW, BODY)
    with pytest.raises(SignatureError, match="no signature matches"):
        verify_signature(BODY, f"t={NOW + 600},v1={signature}", SECRET, now=NOW + 600)


@pytest.mark.parametrize("age", [301, 3600, -301])
def test_a_timestamp_outside_the_tolerance_window_is_refused(age: int) -> None:
    header = signature_header([SECRET], NOW, BODY)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(BODY, header, SECRET, now=NOW + age)
    assert verify_signature(BODY, header, SECRET, now=NOW + age, tolerance_seconds=abs(age)) == NOW


def test_the_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify_signature(BODY, signature_header([SECRET], NOW, BODY), OTHER, now=NOW)


def test_during_a_rotation_either_secret_verifies() -> None:
    header = signature_header([OTHER, SECRET], NOW, BODY)
    assert header.count("v1=") == 2
    assert verify_signature(BODY, header, SECRET, now=NOW) == NOW
    assert verify_signature(BODY, header, OTHER, now=NOW) == NOW
    with pytest.raises(SignatureError):
        verify_signature(BODY, header, "whsec_neither", now=NOW)


@pytest.mark.parametrize("header", [None, "", "v1=abc", f"t={NOW}", f"t=soon,v1={'0' * 64}", "garbage"])
def test_a_missing_or_malformed_header_is_refused(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify_signature(BODY, header, SECRET, now=NOW)


def test_secrets_are_random_prefixed_and_round_trip_only_under_their_key() -> None:
    a, b = new_endpoint_secret(), new_endpoint_secret()
    assert a != b and a.startswith("whsec_") and len(a) > 40
    key_one, key_two = "key-one-0123456789abcdef", "key-two-0123456789abcdef"  # pragma: allowlist secret
    stored = encrypt_secret(a, secret_key=key_one)
    assert a not in stored
    assert decrypt_secret(stored, secret_key=key_one) == a
    with pytest.raises(ValueError, match="cannot be decrypted"):
        decrypt_secret(stored, secret_key=key_two)


def test_retry_delays_double_are_capped_and_jittered() -> None:
    for attempt, full in ((1, 30), (2, 60), (3, 120), (10, 3600), (60, 3600)):
        delays = [retry_delay(attempt, base=30, cap=3600) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1, "no jitter"

"""Webhook signatures: how Skybook signs a delivery and how a receiver checks it.

The signature is HMAC-SHA256 over ``f"{timestamp}.{body}"`` (the raw request body bytes) with the
endpoint's secret, sent as ``Skybook-Signature: t=<timestamp>,v1=<hex>[,v1=<hex>]``. During the
grace period after a secret rotation a delivery carries one ``v1`` per valid secret, so a receiver
holding either the old or the new secret accepts it.

This module uses the standard library only, so a receiver (or the Python client) can copy it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

SIGNATURE_HEADER = "Skybook-Signature"
EVENT_ID_HEADER = "Skybook-Event-Id"
EVENT_TYPE_HEADER = "Skybook-Event-Type"
TIMESTAMP_HEADER = "Skybook-Timestamp"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature header is missing, malformed, too old or matches none of the secrets."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``timestamp.body`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str], timestamp: int, body: bytes) -> str:
    """The ``Skybook-Signature`` value: the timestamp and one ``v1`` signature per secret."""
    signatures = ",".join(f"v1={sign(s, timestamp, body)}" for s in secrets)
    return f"t={timestamp},{signatures}"


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a delivery; return its timestamp, or raise :class:`SignatureError`.

    ``body`` must be the raw bytes received (not re-serialized JSON). A timestamp further than
    ``tolerance_seconds`` from ``now`` is refused, so a captured request cannot be replayed later.
    The comparison runs in constant time.
    """
    if not header:
        raise SignatureError("no Skybook-Signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError as exc:
                raise SignatureError("the signature timestamp is not a number") from exc
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("the signature header needs t= and at least one v1=")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureError("the signature timestamp is outside the tolerance window")
    expected = sign(secret, timestamp, body)
    # Compare against every candidate without stopping early, so timing tells nothing.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no signature matches the secret")
    return timestamp

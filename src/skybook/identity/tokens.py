"""Access tokens: EdDSA-signed JWTs with rotating keys, pinned algorithm and strict claims."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Never read the algorithm from the token: only this one is accepted.
ALGORITHM = "EdDSA"
ACCESS_TYPE = "at+jwt"  # RFC 9068


class InvalidToken(Exception):
    """The token is not acceptable for any reason; callers answer 401 without saying why."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


def derive_key(kid: str, secret: str) -> SigningKey:
    """An Ed25519 key derived from a secret, so every replica derives the same key from settings."""
    seed = HKDF(algorithm=SHA256(), length=32, salt=b"skybook-jwt", info=kid.encode()).derive(secret.encode())
    return SigningKey(kid, Ed25519PrivateKey.from_private_bytes(seed))


class KeyRing:
    """The active signing key plus retired keys kept to verify tokens issued before a rotation."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self.active = keys[0]
        self._by_kid = {k.kid: k for k in keys}

    @classmethod
    def from_settings(cls, signing_keys: str, fallback_secret: str) -> KeyRing:
        """``kid=secret`` pairs separated by commas, active first; else one key from the app secret."""
        pairs = [p.split("=", 1) for p in signing_keys.split(",") if p.strip()]
        if not pairs:
            return cls([derive_key("k1", fallback_secret)])
        return cls([derive_key(kid.strip(), secret.strip()) for kid, secret in pairs])

    def public_key(self, kid: str) -> Ed25519PublicKey:
        try:
            return self._by_kid[kid].public
        except KeyError:
            raise InvalidToken("unknown key id") from None


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says."""

    subject: uuid.UUID
    kind: str
    session_version: int
    jti: str
    expires_at: datetime
    not_before: datetime


class TokenService:
    """Issues and verifies access tokens."""

    def __init__(self, keys: KeyRing, *, issuer: str, audience: str, ttl: timedelta) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl

    def issue(self, *, subject: uuid.UUID, kind: str, session_version: int, now: datetime) -> tuple[str, datetime]:
        expires = now + self.ttl
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(subject),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_urlsafe(16),
            "knd": kind,
            "sv": session_version,
        }
        headers = {"kid": self.keys.active.kid, "typ": ACCESS_TYPE}
        token = jwt.encode(claims, self.keys.active.private, algorithm=ALGORITHM, headers=headers)
        return token, expires

    def verify(self, token: str, *, now: datetime) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        if header.get("alg") != ALGORITHM or header.get("typ") != ACCESS_TYPE:
            raise InvalidToken("wrong algorithm or token type")
        key = self.keys.public_key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                # Time claims are checked below against our clock (the same clock that issued them).
                options={
                    "require": ["iss", "aud", "sub", "exp", "iat", "nbf", "jti"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
            ts = now.timestamp()
            if not (claims["nbf"] <= ts < claims["exp"] and claims["iat"] <= ts):
                raise InvalidToken("token not valid at this time")
            return AccessClaims(
                subject=uuid.UUID(claims["sub"]),
                kind=str(claims.get("knd", "")),
                session_version=int(claims.get("sv", -1)),
                jti=str(claims["jti"]),
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
                not_before=datetime.fromtimestamp(max(claims["nbf"], claims["iat"]), UTC),
            )
        except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
            raise InvalidToken("invalid token") from exc


def new_secret(prefix: str) -> tuple[str, str, str]:
    """A random credential ``<prefix>_<id>_<secret>``: returns (credential, id part, sha256 of it)."""
    ident = secrets.token_hex(6)
    secret = secrets.token_hex(32)  # hex: no "_" inside, so the parts split unambiguously
    credential = f"{prefix}_{ident}_{secret}"
    return credential, ident, digest(credential)


def digest(credential: str) -> str:
    """SHA-256 of a high-entropy credential (a slow hash buys nothing for 256-bit random secrets)."""
    return hashlib.sha256(credential.encode()).hexdigest()

"""OWASP API2 (broken authentication): every forged, stale, revoked or malformed credential is a 401.

Each refused credential gets a ``401 application/problem+json`` answer with a stable ``code``
(``unauthenticated`` for the resource routes, ``invalid_credentials`` at the token endpoint) and
the ``WWW-Authenticate`` challenge where a Bearer token was expected; never a 500.

Tokens that must be real come from real log-ins at ``POST /v1/auth/token``. Forged tokens are
built with PyJWT or by hand; the control test proves that the forging harness makes acceptable
tokens when nothing is wrong, so each refusal below is caused by the one defect it names.

The authenticator caches look-ups for up to a second per process: after logout, password change
or revocation the tests poll in a bounded loop (at most ~1.5 s) instead of clearing the cache, so
they prove the behaviour a client sees. They assert the outcome, not how long it took.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from skybook.bootstrap import Container
from skybook.identity.tables import audit_log
from skybook.platform.clock import FakeClock
from tests.conftest import PASSWORD, Identities
from tests.security.conftest import Clients

PROBLEM_JSON = "application/problem+json"
POLL_ATTEMPTS = 15  # x 0.1 s: comfortably past the authenticator's one-second cache
ME = "/v1/me"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: Any) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response, code: str = "unauthenticated", *, challenge: bool = True) -> None:
    assert response.status_code == 401, f"{response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert (body["status"], body["code"]) == (401, code), body
    if challenge:
        assert response.headers.get("www-authenticate", "").startswith("Bearer"), response.headers


async def login(anon: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    r = await anon.post("/v1/auth/token", data={"grant_type": "password", "username": email, "password": password})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def refresh(anon: httpx.AsyncClient, token: str) -> httpx.Response:
    return await anon.post("/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": token})


async def until_refused(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    """GET /v1/me until it is refused or the authenticator's cache has surely expired."""
    r = await client.get(ME, headers=headers)
    for _ in range(POLL_ATTEMPTS):
        if r.status_code == 401:
            break
        assert r.status_code == 200, r.text
        await asyncio.sleep(0.1)
        r = await client.get(ME, headers=headers)
    return r


class Forge:
    """Builds access tokens like the server's, with one thing changed."""

    def __init__(self, container: Container, subject: uuid.UUID) -> None:
        self.tokens = container.tokens
        self.clock = container.clock
        self.subject = subject

    @property
    def key(self) -> Ed25519PrivateKey:
        return self.tokens.keys.active.private

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(self.clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": self.tokens.issuer,
            "aud": self.tokens.audience,
            "sub": str(self.subject),
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": secrets.token_urlsafe(16),
            "knd": "user",
            "sv": 1,
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not _DROP}

    def header(self, **changes: Any) -> dict[str, Any]:
        header = {"kid": self.tokens.keys.active.kid, "typ": "at+jwt"}
        header.update(changes)
        return {k: v for k, v in header.items() if v is not _DROP}

    def signed(
        self, *, key: Ed25519PrivateKey | None = None, header: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        return jwt.encode(self.claims(**claims), key or self.key, algorithm="EdDSA", headers=header or self.header())

    def by_hand(self, header: dict[str, Any]) -> str:
        """Signed with the server's key, for headers PyJWT refuses to write."""
        signing_input = f"{_segment({'alg': 'EdDSA', **header})}.{_segment(self.claims())}"
        return f"{signing_input}.{_b64(self.key.sign(signing_input.encode()))}"

    def unsigned(self, alg: str) -> str:
        return f"{_segment(self.header(alg=alg))}.{_segment(self.claims())}."

    def hs256(self, secret: bytes) -> str:
        signing_input = f"{_segment(self.header(alg='HS256'))}.{_segment(self.claims())}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"

    def public_key_bytes(self, encoding: serialization.Encoding) -> bytes:
        fmt = (
            serialization.PublicFormat.Raw
            if encoding is serialization.Encoding.Raw
            else serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return self.key.public_key().public_bytes(encoding, fmt)


_DROP = object()

# Each forged token has exactly one defect; the control test shows the same harness without it works.
FORGERIES: dict[str, Callable[[Forge], str]] = {
    "alg none": lambda f: f.unsigned("none"),
    "alg None": lambda f: f.unsigned("None"),
    "alg NONE": lambda f: f.unsigned("NONE"),
    "EdDSA header, signature stripped": lambda f: f.signed().rsplit(".", 1)[0] + ".",
    "signed with another Ed25519 key": lambda f: f.signed(key=Ed25519PrivateKey.generate()),
    "HS256, secret = the server's raw public key": lambda f: f.hs256(f.public_key_bytes(serialization.Encoding.Raw)),
    "HS256, secret = the server's PEM public key": lambda f: f.hs256(f.public_key_bytes(serialization.Encoding.PEM)),
    "HS256, secret = the kid": lambda f: f.hs256(f.tokens.keys.active.kid.encode()),
    "expired": lambda f: f.signed(exp=int(f.clock.now().timestamp()) - 1),
    "not yet valid (nbf in the future)": lambda f: f.signed(nbf=int(f.clock.now().timestamp()) + 300),
    "issued in the future": lambda f: f.signed(iat=int(f.clock.now().timestamp()) + 300),
    "wrong aud": lambda f: f.signed(aud="someone-else"),
    "aud list without ours": lambda f: f.signed(aud=["billing", "reports"]),
    "wrong iss": lambda f: f.signed(iss="https://evil.example.com"),
    "typ JWT instead of at+jwt": lambda f: f.signed(header=f.header(typ="JWT")),
    "no typ": lambda f: f.signed(header=f.header(typ=_DROP)),
    "unknown kid": lambda f: f.signed(header=f.header(kid="k-unknown")),
    "no kid": lambda f: f.signed(header=f.header(kid=_DROP)),
    "kid is an object": lambda f: f.by_hand(f.header(kid={"path": "../../etc/passwd"})),
    "crit header the server does not understand": lambda f: f.by_hand(f.header(crit=["exp"])),
    "no jti": lambda f: f.signed(jti=_DROP),
    "no sub": lambda f: f.signed(sub=_DROP),
    "no exp": lambda f: f.signed(exp=_DROP),
    "no aud": lambda f: f.signed(aud=_DROP),
    "sub not a uuid": lambda f: f.signed(sub="admin"),
    "sub of nobody": lambda f: f.signed(sub=str(uuid.uuid4())),
    "exp is a string": lambda f: f.signed(exp="tomorrow"),
    "sv is a string": lambda f: f.signed(sv="one"),
    "stale session version": lambda f: f.signed(sv=0),
    "user subject claiming to be an API key": lambda f: f.signed(knd="api_key"),
    "unknown subject kind": lambda f: f.signed(knd="root"),
}


@pytest.fixture
def forge(container: Container, identities: Identities) -> Forge:
    return Forge(container, identities.a_agent.id)


async def test_a_request_without_credentials_is_refused(clients: Clients) -> None:
    anon = clients(None)
    for path in (ME, "/v1/orders", "/v1/flights", "/v1/users"):
        assert_refused(await anon.get(path))
    assert_refused(await anon.post("/v1/holds", json={}))


async def test_the_forging_harness_makes_a_token_the_server_accepts(forge: Forge, clients: Clients) -> None:
    r = await clients(None).get(ME, headers=_bearer(forge.signed()))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == str(forge.subject)


def _refusal_problem(response: httpx.Response) -> str | None:
    """Why ``response`` is not a proper 401 unauthenticated answer, or None when it is."""
    try:
        assert_refused(response)
    except (AssertionError, KeyError, ValueError) as exc:
        return f"{response.status_code} {response.text[:200]} ({exc})"
    return None


async def test_forged_and_malformed_access_tokens_are_refused(forge: Forge, clients: Clients) -> None:
    anon = clients(None)
    violations = []
    for defect, make in FORGERIES.items():
        token = make(forge)
        # In the Authorization header, and in the API-key header, which is no better.
        for headers in (_bearer(token), {"X-API-Key": token}):
            problem = _refusal_problem(await anon.get(ME, headers=headers))
            if problem:
                violations.append(f"{defect} via {next(iter(headers))}: {problem}")
    assert not violations, f"{len(violations)} accepted or mishandled:\n" + "\n".join(violations)


async def test_a_real_token_expires_at_its_exp(identities: Identities, clients: Clients, clock: FakeClock) -> None:
    anon = clients(None)
    tokens = await login(anon, identities.a_agent.email)
    headers = _bearer(tokens["access_token"])
    clock.advance(timedelta(seconds=tokens["expires_in"] - 1))
    assert (await anon.get(ME, headers=headers)).status_code == 200
    clock.advance(timedelta(seconds=1))
    assert_refused(await anon.get(ME, headers=headers))


async def test_a_real_token_is_not_valid_before_it_was_issued(
    identities: Identities, clients: Clients, clock: FakeClock
) -> None:
    anon = clients(None)
    tokens = await login(anon, identities.a_agent.email)
    clock.advance(timedelta(seconds=-1))  # a replica whose clock runs behind the issuer's
    assert_refused(await anon.get(ME, headers=_bearer(tokens["access_token"])))


async def test_a_refresh_token_is_not_an_access_token(identities: Identities, clients: Clients) -> None:
    anon = clients(None)
    tokens = await login(anon, identities.a_agent.email)
    assert_refused(await anon.get(ME, headers=_bearer(tokens["refresh_token"])))
    assert_refused(await anon.get(ME, headers={"X-API-Key": tokens["refresh_token"]}))


async def test_reusing_a_rotated_refresh_token_revokes_its_whole_family(
    identities: Identities, clients: Clients, container: Container
) -> None:
    anon = clients(None)
    first = await login(anon, identities.a_agent.email)
    rotated = await refresh(anon, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    newest = rotated.json()["refresh_token"]
    # The spent token again: someone replays a stolen copy.
    replay = await refresh(anon, first["refresh_token"])
    assert_refused(replay, "invalid_credentials", challenge=False)
    # The legitimate holder's newest token of that family is dead too.
    assert_refused(await refresh(anon, newest), "invalid_credentials", challenge=False)
    # A separate log-in (another family) is unaffected.
    other = await login(anon, identities.a_agent.email)
    assert (await refresh(anon, other["refresh_token"])).status_code == 200
    # Tenant A's admin sees the revocation in the audit log.
    events = (await clients(identities.a_admin).get("/v1/audit-events", params={"page_size": 100})).json()["items"]
    revoked = [e for e in events if e["action"] == "token_family.revoked"]
    assert len(revoked) == 1, events
    assert revoked[0]["actor_id"] == str(identities.a_agent.id)
    assert revoked[0]["details"].get("reason") == "refresh_token_reuse"
    async with container.engine.connect() as conn:
        count = await conn.scalar(
            sa.select(sa.func.count()).select_from(audit_log).where(audit_log.c.action == "token_family.revoked")
        )
    assert count == 1


async def test_garbage_refresh_tokens_are_refused_at_the_token_endpoint(clients: Clients) -> None:
    anon = clients(None)
    for token in ("rt_" + "A" * 60, "garbage", "rt_\u00e9\u00e8", "x" * 200):
        assert_refused(await refresh(anon, token), "invalid_credentials", challenge=False)


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "password", "username": "agent\x00@agency-a.example.com", "password": "x" * 12},
        {"grant_type": "password", "username": "agent@agency-a.example.com", "password": "pass\x00word-123"},
        {"grant_type": "client_credentials", "client_id": "sbk_\x00", "client_secret": "x"},
        {"grant_type": "refresh_token", "refresh_token": "rt_\x00"},
    ],
    ids=["username", "password", "client_id", "refresh_token"],
)
async def test_a_nul_character_at_the_token_endpoint_is_refused_not_a_server_error(
    clients: Clients, form: dict[str, str]
) -> None:
    r = await clients(None).post("/v1/auth/token", data=form)
    assert (r.status_code, r.json()["code"]) == (422, "validation_error"), r.text


async def test_the_token_endpoint_answers_a_malformed_request_with_the_right_problem(clients: Clients) -> None:
    anon = clients(None)
    unknown_grant = await anon.post("/v1/auth/token", data={"grant_type": "implicit", "username": "a@example.com"})
    assert (unknown_grant.status_code, unknown_grant.json()["code"]) == (422, "validation_error"), unknown_grant.text
    as_json = await anon.post("/v1/auth/token", json={"grant_type": "password", "username": "a", "password": "b"})
    assert (as_json.status_code, as_json.json()["code"]) == (415, "unsupported_media_type"), as_json.text
    assert "x-www-form-urlencoded" in as_json.json()["detail"]


async def test_an_access_token_stops_working_after_logout(identities: Identities, clients: Clients) -> None:
    anon = clients(None)
    tokens = await login(anon, identities.a_agent.email)
    headers = _bearer(tokens["access_token"])
    assert (await anon.get(ME, headers=headers)).status_code == 200
    assert (await anon.post("/v1/auth/logout", headers=headers)).status_code == 204
    assert_refused(await until_refused(anon, headers))
    assert_refused(await refresh(anon, tokens["refresh_token"]), "invalid_credentials", challenge=False)
    # Logging out again with the dead token is itself refused.
    assert_refused(await anon.post("/v1/auth/logout", headers=headers))


async def test_an_access_token_stops_working_after_a_password_change(identities: Identities, clients: Clients) -> None:
    anon = clients(None)
    email = identities.a_agent.email
    tokens = await login(anon, email)
    headers = _bearer(tokens["access_token"])
    changed = await anon.post(
        "/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "an entirely new passphrase"},
        headers=headers,
    )
    assert changed.status_code == 204, changed.text
    assert_refused(await until_refused(anon, headers))
    assert_refused(await refresh(anon, tokens["refresh_token"]), "invalid_credentials", challenge=False)
    old = await anon.post("/v1/auth/token", data={"grant_type": "password", "username": email, "password": PASSWORD})
    assert_refused(old, "invalid_credentials", challenge=False)
    await login(anon, email, "an entirely new passphrase")


async def test_a_revoked_api_key_and_its_client_credentials_tokens_stop_working(
    identities: Identities, clients: Clients
) -> None:
    admin, anon = clients(identities.a_admin), clients(None)
    created = await admin.post("/v1/api-keys", json={"name": "to be revoked", "scopes": ["bookings:read"]})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    prefix, _, secret = key.rpartition("_")
    exchanged = await anon.post(
        "/v1/auth/token", data={"grant_type": "client_credentials", "client_id": prefix, "client_secret": secret}
    )
    assert exchanged.status_code == 200, exchanged.text
    machine_token = _bearer(exchanged.json()["access_token"])
    for headers in (_bearer(key), {"X-API-Key": key}, machine_token):
        assert (await anon.get(ME, headers=headers)).status_code == 200
    revoked = await admin.post(f"/v1/api-keys/{created.json()['id']}/revoke")
    assert revoked.status_code == 200, revoked.text
    for headers in (_bearer(key), {"X-API-Key": key}, machine_token):
        assert_refused(await until_refused(anon, headers))
    again = await anon.post(
        "/v1/auth/token", data={"grant_type": "client_credentials", "client_id": prefix, "client_secret": secret}
    )
    assert_refused(again, "invalid_credentials", challenge=False)


async def test_an_api_key_with_a_real_prefix_and_a_wrong_secret_is_refused(
    identities: Identities, clients: Clients
) -> None:
    key = identities.a_key.api_key
    assert key is not None
    prefix, _, secret = key.rpartition("_")
    anon = clients(None)
    for wrong in (f"{prefix}_{'0' * len(secret)}", f"{prefix}_", f"{prefix}_{secret}x", f"{prefix}_{secret[:-1]}"):
        assert_refused(await anon.get(ME, headers=_bearer(wrong)))
        assert_refused(await anon.get(ME, headers={"X-API-Key": wrong}))


# Header values as raw bytes, so non-ASCII and odd octets reach the app as a client would send them.
GARBAGE: dict[str, tuple[bytes, bytes]] = {
    "Bearer with nothing": (b"authorization", b"Bearer"),
    "Bearer and spaces": (b"authorization", b"Bearer     "),
    "Basic credentials": (b"authorization", b"Basic YWRtaW46YWRtaW4="),
    "Digest scheme": (b"authorization", b'Digest username="admin"'),
    "garbage string": (b"authorization", b"Bearer garbage"),
    "three empty segments": (b"authorization", b"Bearer .."),
    "three junk segments": (b"authorization", b"Bearer a.b.c"),
    "non-base64 segments": (b"authorization", b"Bearer !!!.???.###"),
    "header is a JSON array": (b"authorization", b"Bearer " + _segment([1, 2]).encode() + b".e30.c2ln"),
    "header is not JSON": (b"authorization", b"Bearer " + _b64(b"{not json").encode() + b".e30.c2ln"),
    "10 kB token": (b"authorization", b"Bearer " + b"A" * 10_240),
    "10 kB three-segment token": (b"authorization", b"Bearer " + b"eyJhbGciOiJFZERTQSJ9." + b"A" * 10_240 + b".sig"),
    "10 kB API key": (b"x-api-key", b"sbk_" + b"a" * 10_240),
    "API key without secret": (b"x-api-key", b"sbk_deadbeef"),
    "API key of nothing": (b"authorization", b"Bearer sbk_000000000000_" + b"0" * 64),
    "API key of underscores": (b"authorization", b"Bearer sbk___"),
    "non-ASCII token (UTF-8)": (b"authorization", "Bearer ñandú-漢字-🔑".encode()),
    "non-ASCII API key (UTF-8)": (b"x-api-key", "sbk_ключ_секрет".encode()),
    "non-ASCII API key prefix (UTF-8)": (b"authorization", "Bearer sbk_é_ü".encode()),
    "latin-1 octets": (b"authorization", b"Bearer \xff\xfe\xfd"),
    "control characters": (b"authorization", b"Bearer \x01\x02\x7f"),
    "NUL in an API key": (b"x-api-key", b"sbk_ab\x00cd_x"),
    "NUL in a Bearer API key": (b"authorization", b"Bearer sbk_\x00_x"),
    "NUL in a token": (b"authorization", b"Bearer a\x00b.c.d"),
    "SQL in an API key": (b"x-api-key", b"sbk_' OR '1'='1_x"),
    "format string": (b"authorization", b"Bearer %s%s%s%n"),
}


async def test_garbage_credentials_are_refused_never_a_server_error(app: Any) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    violations = []
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as raw:
        for case, (name, value) in GARBAGE.items():
            request = raw.build_request("GET", ME)
            request.headers[name.decode()] = value.decode("latin-1")
            problem = _refusal_problem(await raw.send(request))
            if problem:
                violations.append(f"{case}: {problem}")
    assert not violations, "\n".join(violations)

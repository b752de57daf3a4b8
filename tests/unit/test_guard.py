"""The router guard authenticates and counts each request once; the principal checks only read it.

A small app with stub adapters (authenticator, limiter) behind the real dependencies, so each test
states what the authenticator and the limiter saw and what the caller got back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from skybook.platform.deps import GUARD, BookingWriter, CurrentPrincipal, OperatorPrincipal
from skybook.platform.errors import Unauthenticated
from skybook.platform.http import install_error_handlers
from skybook.platform.ratelimit import LimitResult
from skybook.platform.security import Principal, Role

AGENT = Principal(id=uuid.UUID(int=1), kind="user", tenant_id=uuid.UUID(int=9), role=Role.AGENT, plan="standard")
READ_ONLY_KEY = Principal(
    id=uuid.UUID(int=2),
    kind="api_key",
    tenant_id=uuid.UUID(int=9),
    role=Role.AGENT,
    plan="standard",
    scopes=frozenset({"search", "bookings:read"}),
)
TOKENS = {"agent": AGENT, "read-only": READ_ONLY_KEY}


class Authenticator:
    def __init__(self) -> None:
        self.calls = 0

    async def authenticate(self, request: Request) -> Principal:
        self.calls += 1
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in TOKENS:
            raise Unauthenticated("no valid credentials")
        return TOKENS[token]


class Limiter:
    def __init__(self) -> None:
        self.hits: list[tuple[str, int, str]] = []
        self.allow = True

    async def hit_all(self, limits: Sequence[tuple[str, int, str]]) -> list[LimitResult]:
        self.hits += limits
        return [LimitResult(allowed=self.allow, limit=limit, remaining=0, reset_after=7) for _, limit, _ in limits]


class ResolvesEarly:
    """Stands in for the idempotency middleware, which may resolve the principal before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"x-resolve-early" in dict(scope["headers"]):
            scope.setdefault("state", {})["principal"] = AGENT
        await self.app(scope, receive, send)


@pytest.fixture
def adapters() -> SimpleNamespace:
    return SimpleNamespace(authenticator=Authenticator(), limiter=Limiter())


@pytest.fixture
def client(adapters: SimpleNamespace) -> httpx.AsyncClient:
    app = FastAPI()
    app.state.container = adapters
    install_error_handlers(app)
    guarded = APIRouter()
    unguarded = APIRouter()

    @guarded.post("/guarded/holds")
    async def guarded_write(principal: BookingWriter) -> dict[str, Any]:
        return {"id": str(principal.id)}

    @guarded.get("/guarded/me")
    async def guarded_me(principal: CurrentPrincipal) -> dict[str, Any]:
        return {"id": str(principal.id)}

    @guarded.post("/guarded/flights")
    async def guarded_operator(principal: OperatorPrincipal) -> dict[str, Any]:
        return {"id": str(principal.id)}

    @unguarded.post("/unguarded/holds")
    async def unguarded_write(principal: BookingWriter) -> dict[str, Any]:
        return {"id": str(principal.id)}

    app.include_router(guarded, dependencies=[GUARD])
    app.include_router(unguarded)
    app.add_middleware(ResolvesEarly)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_guarded_request_is_authenticated_and_counted_once(
    client: httpx.AsyncClient, adapters: SimpleNamespace
) -> None:
    r = await client.post("/guarded/holds", headers=_auth("agent"))
    assert (r.status_code, r.json()) == (200, {"id": str(AGENT.id)})
    assert adapters.authenticator.calls == 1
    assert adapters.limiter.hits == [
        ("principal", AGENT.rate_limit, str(AGENT.id)),
        ("tenant", AGENT.tenant_rate_limit, str(AGENT.tenant_id)),
    ]


async def test_the_guard_reuses_a_principal_the_idempotency_middleware_resolved(
    client: httpx.AsyncClient, adapters: SimpleNamespace
) -> None:
    r = await client.get("/guarded/me", headers={"X-Resolve-Early": "1"})
    assert (r.status_code, r.json()) == (200, {"id": str(AGENT.id)})
    assert adapters.authenticator.calls == 0
    assert len(adapters.limiter.hits) == 2  # ...and still counts the request


async def test_no_valid_credentials_answer_401_before_anything_is_counted(
    client: httpx.AsyncClient, adapters: SimpleNamespace
) -> None:
    for headers in ({}, _auth("forged")):
        r = await client.post("/guarded/holds", headers=headers)
        assert (r.status_code, r.json()["code"]) == (401, "unauthenticated"), r.text
    assert adapters.limiter.hits == []


async def test_a_used_up_limit_answers_429_before_the_scope_is_checked(
    client: httpx.AsyncClient, adapters: SimpleNamespace
) -> None:
    adapters.limiter.allow = False
    r = await client.post("/guarded/holds", headers=_auth("read-only"))
    assert (r.status_code, r.json()["code"]) == (429, "rate_limited"), r.text
    assert r.headers["retry-after"] == "7"


async def test_a_missing_scope_or_role_answers_403(client: httpx.AsyncClient, adapters: SimpleNamespace) -> None:
    r = await client.post("/guarded/holds", headers=_auth("read-only"))
    assert (r.status_code, r.json()["code"]) == (403, "forbidden"), r.text
    r = await client.post("/guarded/flights", headers=_auth("agent"))
    assert (r.status_code, r.json()["code"]) == (403, "forbidden"), r.text
    assert adapters.authenticator.calls == 2


async def test_a_principal_check_without_the_guard_authenticates_itself(
    client: httpx.AsyncClient, adapters: SimpleNamespace
) -> None:
    r = await client.post("/unguarded/holds")
    assert (r.status_code, r.json()["code"]) == (401, "unauthenticated"), r.text
    r = await client.post("/unguarded/holds", headers=_auth("read-only"))
    assert (r.status_code, r.json()["code"]) == (403, "forbidden"), r.text
    r = await client.post("/unguarded/holds", headers=_auth("agent"))
    assert (r.status_code, r.json()) == (200, {"id": str(AGENT.id)})
    assert adapters.authenticator.calls == 3
    assert adapters.limiter.hits == []  # the limits are the guard's job

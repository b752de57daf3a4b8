"""FastAPI dependencies shared by every context's routes: container, connections, principal, limits."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Protocol

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.platform.errors import Forbidden, RateLimited
from skybook.platform.ratelimit import LimiterUnavailable
from skybook.platform.security import Principal, Role

if TYPE_CHECKING:
    from skybook.bootstrap import Container

log = logging.getLogger("skybook.auth")

# Declared for the OpenAPI document ("Authorize" button); the authenticator does the checking.
oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/v1/auth/token",
    auto_error=False,
    description="Password grant for first-party clients only; machines use API keys or client credentials.",
)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (sbk_...).")


class Authenticator(Protocol):
    """Port: turns a request's credentials into a principal or raises a 401 domain error."""

    async def authenticate(self, request: Request) -> Principal: ...


async def get_container(request: Request) -> Container:
    """The process's composition root, stored on the app at start-up.

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, which cost
    every request a thread hand-off.
    """
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated["Container", Depends(get_container)]


async def read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection for queries; no write lock, no outbox."""
    async with request.app.state.container.engine.connect() as conn:
        yield conn


ReadConn = Annotated[AsyncConnection, Depends(read_connection)]


def client_ip(request: Request) -> str:
    """The caller's address as the server saw it (a proxy's X-Forwarded-For is trusted only via uvicorn)."""
    return request.client.host if request.client else "unknown"


async def current_principal(
    request: Request,
    _token: Annotated[str | None, Depends(oauth2_scheme)] = None,
    _key: Annotated[str | None, Depends(api_key_scheme)] = None,
) -> Principal:
    """Resolve the caller, or answer 401. Every /v1 route except log-in and sign-up depends on it."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    authenticator: Authenticator = request.app.state.container.authenticator
    principal = await authenticator.authenticate(request)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def rate_limited(request: Request, principal: CurrentPrincipal) -> None:
    """Count the request against the caller's and the tenant's per-minute limits (429 beyond)."""
    limiter = request.app.state.container.limiter
    try:
        # One round trip for both; the tenant is not counted when the principal's own limit refuses.
        results = await limiter.hit_all(
            (
                ("principal", principal.rate_limit, str(principal.id)),
                ("tenant", principal.tenant_rate_limit, str(principal.tenant_id)),
            )
        )
    except LimiterUnavailable as exc:
        # Fail open: see skybook.platform.ratelimit for why.
        log.warning("rate limiter unavailable, request allowed: %s", exc)
        return
    refused = [r for r in results if not r.allowed]
    result = refused[0] if refused else min(results, key=lambda r: r.remaining)
    request.state.rate_limit = result
    if not result.allowed:
        raise RateLimited(
            "the request rate limit of your plan is used up; retry after the reset",
            headers={k.decode().title(): v.decode() for k, v in result.headers()},
        )


async def ip_rate_limited(request: Request) -> None:
    """A per-address limit for the routes that work without a principal (sign-up, token)."""
    container = request.app.state.container
    try:
        result = await container.limiter.hit("ip", container.settings.anonymous_rate_limit, client_ip(request))
    except LimiterUnavailable as exc:
        log.warning("rate limiter unavailable, request allowed: %s", exc)
        return
    request.state.rate_limit = result
    if not result.allowed:
        raise RateLimited(
            "too many requests from this address; retry after the reset",
            headers={k.decode().title(): v.decode() for k, v in result.headers()},
        )


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting only principals with one of ``roles`` (403 otherwise)."""
    allowed = frozenset(roles)

    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed or (principal.kind != "user" and principal.role not in allowed):
            raise Forbidden(f"this operation needs one of the roles: {', '.join(sorted(allowed))}")
        return principal

    return check


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting only principals granted ``scope`` (API keys carry scopes; users have all)."""

    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.has_scope(scope):
            raise Forbidden(f"this operation needs the scope {scope!r}")
        return principal

    return check


operator_only = require_roles(Role.PLATFORM_ADMIN, Role.AIRLINE_STAFF)
OperatorPrincipal = Annotated[Principal, Depends(operator_only)]
SearchPrincipal = Annotated[Principal, Depends(require_scope("search"))]
BookingReader = Annotated[Principal, Depends(require_scope("bookings:read"))]
BookingWriter = Annotated[Principal, Depends(require_scope("bookings:write"))]

"""FastAPI dependencies shared by every context's routes: container, connections, principal, limits."""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from fastapi.security.base import SecurityBase
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.platform.errors import Forbidden, RateLimited
from skybook.platform.ratelimit import LimiterUnavailable
from skybook.platform.security import Principal, Role

if TYPE_CHECKING:
    from skybook.bootstrap import Container

log = logging.getLogger("skybook.auth")

# Declared in the OpenAPI document ("Authorize" button) by install_security_openapi; the authenticator
# does the checking.
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


def _stored_principal(request: Request) -> Principal | None:
    """The principal already resolved for this request (by the guard or the idempotency middleware)."""
    state: dict[str, Any] | None = request.scope.get("state")
    return state.get("principal") if state is not None else None


async def current_principal(request: Request) -> Principal:
    """Resolve the caller, or answer 401.

    On every guarded route :func:`authenticate_and_limit` has already stored the principal on the
    request, so this only reads it back; on a route without the guard it authenticates itself.
    A plain function of the request, not a dependency on other dependencies: FastAPI walks every
    node of a route's dependency tree on every request, and with the principal and the two
    security schemes as nodes under each check that walk was ~45 % of a hold's CPU outside the
    database.
    """
    principal = _stored_principal(request)
    if principal is None:
        authenticator: Authenticator = request.app.state.container.authenticator
        principal = await authenticator.authenticate(request)
        request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def _count_request(request: Request, principal: Principal) -> None:
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


async def authenticate_and_limit(request: Request) -> None:
    """The guard of every /v1 router except log-in and sign-up: resolve the caller (401 without
    valid credentials), store it on ``request.state.principal`` and count the request against the
    caller's and the tenant's limits (429 beyond).

    One dependency without sub-dependencies on purpose (see :func:`current_principal`). The
    security schemes it checks are declared in the OpenAPI document by
    :func:`install_security_openapi`, not by depending on the scheme objects.
    """
    await _count_request(request, await current_principal(request))


GUARD = Depends(authenticate_and_limit)

# The dependencies that need a principal: an operation using any of them declares the security
# schemes in the OpenAPI document (FastAPI would do so only for the scheme objects themselves).
_NEEDS_PRINCIPAL: weakref.WeakSet[Callable[..., object]] = weakref.WeakSet((current_principal, authenticate_and_limit))


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


def require_roles(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting only principals with one of ``roles`` (403 otherwise)."""
    allowed = frozenset(roles)

    async def check(request: Request) -> Principal:
        principal = await current_principal(request)
        if principal.role not in allowed or (principal.kind != "user" and principal.role not in allowed):
            raise Forbidden(f"this operation needs one of the roles: {', '.join(sorted(allowed))}")
        return principal

    _NEEDS_PRINCIPAL.add(check)
    return check


def require_scope(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting only principals granted ``scope`` (API keys carry scopes; users have all)."""

    async def check(request: Request) -> Principal:
        principal = await current_principal(request)
        if not principal.has_scope(scope):
            raise Forbidden(f"this operation needs the scope {scope!r}")
        return principal

    _NEEDS_PRINCIPAL.add(check)
    return check


operator_only = require_roles(Role.PLATFORM_ADMIN, Role.AIRLINE_STAFF)
OperatorPrincipal = Annotated[Principal, Depends(operator_only)]
SearchPrincipal = Annotated[Principal, Depends(require_scope("search"))]
BookingReader = Annotated[Principal, Depends(require_scope("bookings:read"))]
BookingWriter = Annotated[Principal, Depends(require_scope("bookings:write"))]


def _needs_principal(dependant: Dependant) -> bool:
    return any(
        (dep.call is not None and dep.call in _NEEDS_PRINCIPAL) or _needs_principal(dep)
        for dep in dependant.dependencies
    )


# The keys FastAPI writes before an operation's ``security``: it goes right after them, where
# FastAPI itself puts it, so the document reads (and diffs) exactly as FastAPI would write it.
_BEFORE_SECURITY = frozenset({"tags", "summary", "description", "externalDocs", "operationId", "deprecated"})


def _with_security(operation: dict[str, Any], schemes: tuple[SecurityBase, ...]) -> dict[str, Any]:
    security: list[dict[str, list[str]]] = [{scheme.scheme_name: []} for scheme in schemes]
    out: dict[str, Any] = {}
    for key, value in operation.items():
        if key not in _BEFORE_SECURITY and "security" not in out:
            out["security"] = security
        if key != "security":
            out[key] = value
    out.setdefault("security", security)
    return out


def install_security_openapi(app: FastAPI) -> None:
    """Declare :data:`oauth2_scheme` and :data:`api_key_scheme` on every operation that needs a principal.

    FastAPI documents a security scheme only where the scheme object is a dependency of the
    route, and each dependency costs CPU on every request; so the schemes are not dependencies
    and this adds what FastAPI would have generated: both schemes under
    ``components.securitySchemes``, and ``security`` (either scheme) on each such operation.
    """
    generate = app.openapi
    schemes: tuple[SecurityBase, ...] = (oauth2_scheme, api_key_scheme)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        paths = document.get("paths", {})
        secured = 0
        for route in iter_route_contexts(app.routes):
            dependant = getattr(route, "dependant", None)
            if not isinstance(route.original_route, APIRoute) or dependant is None or not route.include_in_schema:
                continue
            if not _needs_principal(dependant):
                continue
            path_item = paths.get(route.path_format, {})
            for method in route.methods or ():
                operation = path_item.get(method.lower())
                if operation is not None:
                    path_item[method.lower()] = _with_security(operation, schemes)
                    secured += 1
        if secured:
            components = document.setdefault("components", {})
            components["securitySchemes"] = {
                **components.get("securitySchemes", {}),
                **{
                    scheme.scheme_name: jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
                    for scheme in schemes
                },
            }
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]

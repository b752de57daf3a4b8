"""The ASGI application: FastAPI app factory wiring routers, middlewares and background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.types import Scope

from skybook import __version__
from skybook.asyncapi import build_asyncapi
from skybook.booking.api import router as booking_router
from skybook.bootstrap import Container, bootstrap
from skybook.identity.api import public_router as auth_router
from skybook.identity.api import router as identity_router
from skybook.inventory.api import router as inventory_router
from skybook.notifications.webhooks import run_webhook_sender
from skybook.notifications.webhooks.api import router as webhooks_router
from skybook.periodic import run_periodic_jobs
from skybook.platform.deps import GUARD, install_security_openapi
from skybook.platform.heap import settle_heap
from skybook.platform.http import (
    BodyLimitMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    error_responses,
    install_error_handlers,
    install_problem_openapi,
)
from skybook.platform.idempotency import IdempotencyMiddleware
from skybook.platform.logs import configure_logging
from skybook.platform.observability import MetricsMiddleware, metrics_payload
from skybook.platform.schemas import Output
from skybook.search.api import router as search_router

log = logging.getLogger("skybook")

DESCRIPTION = """
Skybook sells seats: search flights, hold seats, confirm passengers, pay, receive 13-digit
e-tickets, choose seats and cancel.

* Every error is `application/problem+json` with a stable `code`.
* Every POST accepts an `Idempotency-Key` header: the same key and body replay the first
  answer; the same key with another body is refused (422).
* Every `/v1` route needs a principal: a Bearer access token from `POST /v1/auth/token`, or an
  API key (`Authorization: Bearer sbk_...` or `X-API-Key`). Another tenant's object answers 404.
* Requests count against per-minute limits of the caller and its tenant's plan; a 429 carries
  `Retry-After` and the `RateLimit-*` headers.
"""


class Health(Output):
    """Liveness or readiness."""

    status: str = Field(description="ok or ready.", examples=["ok"])


async def health() -> Health:
    """The process is up."""
    return Health(status="ok")


async def ready(request: Request) -> Health:
    """The process can reach its database."""
    container: Container = request.app.state.container
    async with container.engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
    return Health(status="ready")


async def asyncapi(request: Request) -> JSONResponse:
    """The event catalogue as AsyncAPI 3.0 (also written by ``skybook asyncapi``); see docs/events.md."""
    state = request.app.state
    document: dict[str, Any] | None = getattr(state, "asyncapi_document", None)
    if document is None:
        container: Container = state.container
        document = state.asyncapi_document = build_asyncapi(container.consumers())
    return JSONResponse(document)


def create_app(container: Container | None = None) -> FastAPI:
    """Build the app around a container (one is bootstrapped from the environment if not given)."""
    if container is None:
        # A server process (uvicorn's factory call, in every worker): set up its logs first.
        container = bootstrap()
        configure_logging(container.settings.log_format, container.settings.log_level)
    settings = container.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[Any]] = []
        settle_heap()
        if settings.run_workers:
            tasks.append(asyncio.create_task(container.dispatcher.run(), name="dispatcher"))
            tasks.append(asyncio.create_task(run_periodic_jobs(container), name="periodic-jobs"))
            tasks.append(asyncio.create_task(run_webhook_sender(container), name="webhook-sender"))
        try:
            yield
        finally:
            container.dispatcher.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await container.close()

    app = FastAPI(
        title="Skybook",
        version=__version__,
        summary="Open-source airline reservation platform.",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_tags=[
            {"name": "Search", "description": "Find priced offers."},
            {
                "name": "Booking",
                "description": "Holds, orders, payment, e-tickets, seats and cancellation.",
            },
            {"name": "Flights", "description": "Dated flights, fares, schedules and seat maps."},
            {"name": "Network", "description": "Airports and aircraft types."},
            {"name": "Identity", "description": "Log-in, tokens, users, tenants, API keys and the audit log."},
            {
                "name": "Webhooks",
                "description": "Signed HTTPS callbacks for a tenant's events, their delivery log and replays.",
            },
            {"name": "Operations", "description": "Health, readiness and the AsyncAPI document of the events."},
        ],
    )
    app.state.container = container
    install_error_handlers(app)
    install_problem_openapi(app)
    install_security_openapi(app)
    app.include_router(auth_router)
    # One place puts a principal and the rate limits on every other /v1 route: a single dependency,
    # as each dependency node costs CPU on every request (see skybook.platform.deps).
    for router in (search_router, booking_router, inventory_router, identity_router, webhooks_router):
        # ...so each of them can answer 401 (no valid credentials) and 429 (a limit is used up).
        app.include_router(router, dependencies=[GUARD], responses=error_responses(401, 429))

    # Module-level endpoints that find the container on the app: FastAPI caches what it learns
    # about every endpoint callable in process-wide caches, so a closure over the container here
    # would keep each app's container (engine, pool, caches) alive for the whole process.
    app.add_api_route(
        "/health",
        health,
        methods=["GET"],
        tags=["Operations"],
        operation_id="health",
        summary="Liveness",
        response_model=Health,
    )
    app.add_api_route(
        "/ready",
        ready,
        methods=["GET"],
        tags=["Operations"],
        operation_id="ready",
        summary="Readiness",
        response_model=Health,
        responses=error_responses(503),
    )

    if settings.metrics_enabled:

        async def metrics(_: Request) -> Response:
            """Prometheus text format of this process's metrics (not part of the /v1 API)."""
            body, content_type = metrics_payload()
            return Response(body, media_type=content_type)

        # Outside /v1 and the OpenAPI document: scraped per process by Prometheus, not called by
        # tenants; the gateway refuses it from outside (deploy/nginx). See docs/operations.md.
        app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)

    app.add_api_route(
        "/asyncapi.json",
        asyncapi,
        methods=["GET"],
        tags=["Operations"],
        operation_id="getAsyncApi",
        summary="AsyncAPI document of the events",
        response_model=None,
        responses={
            200: {
                "description": "An AsyncAPI 3.0 document: every channel (Kafka topics, RabbitMQ routing keys), "
                "message and payload schema, and which worker consumes what.",
                "content": {"application/json": {"schema": {"type": "object", "description": "AsyncAPI 3.0."}}},
            }
        },
    )

    async def idempotency_caller(scope: Scope) -> str:
        # Idempotency keys belong to the caller; the principal found here is reused by the route.
        principal = await container.authenticator.authenticate(Request(scope))
        scope.setdefault("state", {})["principal"] = principal
        return f"{principal.kind}:{principal.id}"

    # Outermost first: request id, then the body limit, then idempotency (which reads the body).
    app.add_middleware(
        IdempotencyMiddleware,
        engine_factory=lambda: container.engine,
        clock=container.clock,
        write_lock=lambda: container.write_lock,
        caller=idempotency_caller,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-API-Key", "X-Request-ID"],
            expose_headers=[
                "Location",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "X-Request-ID",
                "Idempotent-Replayed",
            ],
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.environment == "production")
    # Inside the request id (so its log lines carry it), outside everything else it times.
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app

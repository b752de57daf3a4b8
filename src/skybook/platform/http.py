"""HTTP plumbing shared by every context: problem responses, request ids, body limits, paging."""

from __future__ import annotations

import functools
import logging
import re
import uuid
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
from fastapi import FastAPI, Query, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skybook.platform.context import correlation_id
from skybook.platform.dberrors import database_busy, database_unavailable
from skybook.platform.errors import Busy, DomainError
from skybook.platform.problems import PROBLEM_JSON, problem, replay_body, send_problem
from skybook.platform.schemas import MAX_PAGE_SIZE, Output, PageInfo

log = logging.getLogger("skybook.http")

_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Resource not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("rate_limited", "Too many requests"),
}


class ValidationIssue(Output):
    """One invalid field."""

    loc: list[str] = Field(description="Where the problem is, e.g. ['body', 'passengers', 'adults'].")
    msg: str = Field(description="What is wrong.")
    type: str = Field(description="Machine-readable kind of problem.")


class ProblemDetail(Output):
    """An error as RFC 9457 problem details; ``code`` is stable and meant for programs."""

    type: str = Field(
        description="URI naming the problem type.",
        examples=["https://skybook.dev/problems/sold-out"],
    )
    title: str = Field(description="Short summary of the problem type.", examples=["Not enough seats left"])
    status: int = Field(description="HTTP status code.", examples=[409])
    detail: str = Field(description="What happened in this case.")
    code: str = Field(description="Stable error code.", examples=["sold_out"])
    errors: list[ValidationIssue] | None = Field(None, description="Invalid fields (validation errors only).")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring problem+json answers for the given statuses."""
    descriptions = {
        400: "Malformed request (e.g. invalid JSON or Idempotency-Key)",
        401: "Missing, invalid or expired credentials",
        402: "Payment declined",
        403: "Not allowed for the caller's role or scopes",
        404: "Not found",
        409: "Conflict with the current state",
        413: "Request body too large",
        415: "Body is not JSON",
        422: "Validation failed",
        429: "Too many requests",
        502: "Payment provider failed",
        503: "Busy, retry shortly",
    }
    return {
        s: {
            "model": ProblemDetail,
            "description": descriptions.get(s, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}},
        }
        for s in statuses
    }


def install_problem_openapi(app: FastAPI) -> None:
    """Document error responses as ``application/problem+json`` only, which is what the server sends.

    ``error_responses`` names ``ProblemDetail`` as the model so FastAPI publishes the schema, and
    FastAPI then also lists it under the route's ``application/json``; this drops that entry.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict):
                    continue
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if str(status)[:1] in {"4", "5"} and PROBLEM_JSON in content:
                        content.pop("application/json", None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def problem_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A ``application/problem+json`` response."""
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    body = problem(status=exc.status, code=exc.code, title=exc.title, detail=exc.detail, **exc.extra)
    headers = dict(exc.headers)
    if exc.status == 503:
        headers.setdefault("Retry-After", "1")
    return problem_response(exc.status, body, headers or None)


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        out.append({"loc": loc, "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    return out


def _malformed_json(detail: str) -> Response:
    return problem_response(400, problem(status=400, code="malformed_json", title="Malformed JSON", detail=detail))


_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def _expects_form(request: Request) -> bool:
    """The matched route reads its body as a form (the OAuth2 token endpoint), not as JSON."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    return body_field is not None and isinstance(body_field.field_info, params.Form)


def _sent_as_unsupported(request: Request) -> bool:
    """A body arrived in a media type the route does not read (JSON, or a form for form routes)."""
    headers = request.headers
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    mime = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if _expects_form(request):
        return has_body and mime not in _FORM_TYPES
    is_json = mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))
    return has_body and not is_json


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return _malformed_json("the request body is not valid JSON")
    body_errors = [e for e in errors if e.get("loc", ("",))[0] == "body"]
    if body_errors and request.method in {"POST", "PUT", "PATCH"} and _sent_as_unsupported(request):
        expected = "application/x-www-form-urlencoded" if _expects_form(request) else "application/json"
        body = problem(
            status=415,
            code="unsupported_media_type",
            title="Unsupported media type",
            detail=f"send the body as {expected}",
        )
        return problem_response(415, body)
    body = problem(
        status=422,
        code="validation_error",
        title="Request is not valid",
        detail="one or more fields are missing or invalid",
        errors=_clean_errors(errors),
    )
    return problem_response(422, body)


# FastAPI's answer when reading the body fails for a reason other than a JSON syntax error:
# nesting too deep for the parser, bytes that are not UTF-8, an integer with thousands of digits.
_BODY_PARSE_FAILED = "There was an error parsing the body"


_OPERATION_METHODS = frozenset({"get", "put", "post", "delete", "patch"})


@functools.cache
def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"({[^}]+})", template)
    return re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts))


def _allowed_methods(request: Request) -> str | None:
    """Every method the requested resource supports, per the OpenAPI document (RFC 9110 ``Allow``).

    Starlette answers 405 from the first route whose path matched and lists only that route's
    methods; a path served by several routes (GET and POST /v1/orders) supports them all. When
    a literal path and a templated one both match (/v1/orders/lookup, /v1/orders/{order_id}),
    the literal one is the resource.
    """
    paths: dict[str, Any] = request.app.openapi().get("paths", {})
    matching = [t for t in paths if _template_pattern(t).fullmatch(request.url.path)]
    if not matching:
        return None
    fewest = min(t.count("{") for t in matching)
    methods = {m.upper() for t in matching if t.count("{") == fewest for m in paths[t] if m in _OPERATION_METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods)) if methods else None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _BODY_PARSE_FAILED:
        return _malformed_json(
            "the request body cannot be read as JSON (bad encoding, too deeply nested or a huge number)"
        )
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        allow = _allowed_methods(request)
        if allow is not None:
            headers["Allow"] = allow
    return problem_response(
        exc.status_code,
        problem(status=exc.status_code, code=code, title=title, detail=detail),
        headers or None,
    )


async def _integrity_error(_: Request, exc: Exception) -> Response:
    # A unique or check constraint stopped a write that raced another: a conflict, not a crash.
    log.info("integrity error turned into 409: %s", exc)
    return problem_response(
        409,
        problem(
            status=409,
            code="conflict",
            title="Conflicting request",
            detail="the request conflicts with the current state; reload and retry",
        ),
    )


async def _pool_exhausted(request: Request, exc: Exception) -> Response:
    # Every pooled connection stayed busy for the whole pool timeout: the database is the
    # bottleneck right now. A retryable 503, like a lock wait that timed out, not a 500.
    log.warning("no database connection free within the pool timeout: %s", exc)
    return await _domain_error(request, Busy("the service is busy; retry the request"))


async def _database_error(request: Request, exc: Exception) -> Response:
    # The database down, restarting or out of connections is an outage of a dependency: a 503
    # the client may retry (and a readiness probe may act on), not a 500 that blames the request.
    if database_busy(exc):
        log.warning("database busy: %s", exc)
        return await _domain_error(request, Busy("what this request needs is busy; retry the request"))
    if not database_unavailable(exc):
        return await _unexpected(request, exc)
    log.warning("database unavailable: %s", exc)
    return problem_response(
        503,
        problem(
            status=503,
            code="database_unavailable",
            title="Database unavailable",
            detail="the database cannot be reached right now; retry shortly",
            request_id=getattr(request.state, "request_id", None),
        ),
        {"Retry-After": "2"},
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    if database_unavailable(exc) or database_busy(exc):  # raised in a middleware (idempotency keys, ...)
        return await _database_error(request, exc)
    log.exception("unhandled error", exc_info=exc)
    return problem_response(
        500,
        problem(
            status=500,
            code="internal_error",
            title="Internal error",
            detail="something went wrong on our side; it has been logged",
            request_id=getattr(request.state, "request_id", None),
        ),
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to a problem document; a 5xx never carries a stack trace."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sa.exc.IntegrityError, _integrity_error)
    app.add_exception_handler(sa.exc.TimeoutError, _pool_exhausted)
    app.add_exception_handler(sa.exc.DBAPIError, _database_error)
    app.add_exception_handler(OSError, _database_error)
    app.add_exception_handler(Exception, _unexpected)


class BodyLimitMiddleware:
    """Refuses request bodies larger than ``max_bytes`` with 413, before any handler reads them."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS", "DELETE"}:
            await self.app(scope, receive, send)
            return
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._too_large(send)
                    return
        chunks = bytearray()
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":
                break
            chunks += message.get("body", b"")
            if len(chunks) > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, replay_body(bytes(chunks), receive), send)

    async def _too_large(self, send: Send) -> None:
        await send_problem(
            send,
            status=413,
            code="payload_too_large",
            title="Request body too large",
            detail=f"request bodies are limited to {self.max_bytes} bytes",
        )


class RequestIdMiddleware:
    """Gives every request a correlation id (``X-Request-ID``) that follows its events and logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                candidate = v.decode("latin-1")
                if 0 < len(candidate) <= 64 and candidate.isprintable():
                    rid = candidate
                break
        rid = rid or uuid.uuid4().hex
        # Also on the scope, so the outermost 500 handler (outside this middleware) can report it.
        scope.setdefault("state", {})["request_id"] = rid
        token = correlation_id.set(rid)

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            correlation_id.reset(token)


class Paging:
    """Page number and size from the query string; the size is capped."""

    def __init__(
        self,
        page: Annotated[int, Query(ge=1, le=10_000, description="1-based page number.")] = 1,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")] = 20,
    ) -> None:
        self.page = page
        self.page_size = page_size

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    async def fetch(
        self,
        conn: AsyncConnection,
        table: sa.Table,
        *,
        where: list[sa.ColumnElement[bool]],
        order_by: list[sa.ColumnElement[Any]],
    ) -> tuple[list[sa.Row[Any]], PageInfo]:
        """One page of a table's rows matching ``where``, with the total count."""
        total = await conn.scalar(sa.select(sa.func.count()).select_from(table).where(*where)) or 0
        rows = await conn.execute(
            sa.select(table).where(*where).order_by(*order_by).offset(self.offset).limit(self.page_size)
        )
        return list(rows), PageInfo(page=self.page, page_size=self.page_size, total=total)


class SecurityHeadersMiddleware:
    """Adds the response headers an API should send (OWASP Secure Headers), plus RateLimit headers."""

    _API_HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"permissions-policy", b"geolocation=(), camera=(), microphone=()"),
    )
    # The interactive docs load their scripts from a CDN; everything else is JSON and needs nothing.
    _DOCS_PATHS = ("/docs", "/redoc")

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"].startswith(self._DOCS_PATHS)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(self._API_HEADERS)
                if not docs:
                    headers.append((b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"))
                if self.hsts:
                    headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
                limit = scope.get("state", {}).get("rate_limit")
                if limit is not None and not any(k == b"ratelimit-limit" for k, _ in headers):
                    headers.extend(limit.headers())
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)

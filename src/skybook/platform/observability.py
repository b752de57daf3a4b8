"""Prometheus metrics for the HTTP API: request rate, latency and errors by route template.

Metrics live in prometheus_client's default registry, so every module of the process (cache,
relay, workers) adds its own there and one ``/metrics`` scrape shows them all. Labels are
bounded: the route is the template Starlette matched (``/v1/holds/{order_id}``), never the raw
path; a request no route matched is ``<unmatched>``; unknown methods are ``OTHER``.

The middleware is pure ASGI and does per request one clock read at each end, one dict lookup and
two updates of pre-bound metric children: it adds microseconds, not a framework layer.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "skybook_http_requests",
    "HTTP requests answered, by method, route template and status class (2xx, 4xx, 5xx).",
    ["method", "route", "status_class"],
)
HTTP_LATENCY = Histogram(
    "skybook_http_request_duration_seconds",
    "Time from the request reaching the app to the response start, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HOLDS = Counter(
    "skybook_holds",
    "POST /v1/holds answered: created (2xx), refused (4xx, e.g. sold_out) or failed (5xx).",
    ["outcome"],
)
BOOKINGS = Counter(
    "skybook_bookings",
    "Booking steps that succeeded over HTTP: confirmed (order created), ticketed (paid), seated, cancelled.",
    ["step"],
)

UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")

# Business counters derived from the route that answered: (method, template) -> step.
_BOOKING_STEPS = {
    ("POST", "/v1/orders"): "confirmed",
    ("POST", "/v1/orders/{order_id}/payments"): "ticketed",
    ("POST", "/v1/orders/{order_id}/seats"): "seated",
    ("POST", "/v1/orders/{order_id}/cancel"): "cancelled",
}
_HOLD_ROUTE = ("POST", "/v1/holds")


def _status_class(status: int) -> str:
    return _CLASSES[status // 100] if 100 <= status < 600 else "5xx"


class _Series:
    """The metric children of one (method, route): bound once, so a request does no label lookups."""

    __slots__ = ("by_class", "labels", "latency", "step")

    def __init__(self, method: str, route: str) -> None:
        self.labels = (method, route)
        self.latency = HTTP_LATENCY.labels(method, route)
        # Bound on first use: a route that never fails exports no 5xx series.
        self.by_class: dict[str, Any] = {}
        step = _BOOKING_STEPS.get((method, route))
        self.step = BOOKINGS.labels(step) if step is not None else None

    def count(self, status_class: str) -> None:
        child = self.by_class.get(status_class)
        if child is None:
            child = self.by_class[status_class] = HTTP_REQUESTS.labels(*self.labels, status_class)
        child.inc()


class MetricsMiddleware:
    """Counts and times every HTTP request by the route template it matched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Keys are (method, template) of the app's own routes plus UNMATCHED: bounded.
        self._series: dict[tuple[str, str], _Series] = {}
        self._templates = _Templates()
        self._holds = {c: HOLDS.labels(o) for c, o in (("2xx", "created"), ("4xx", "refused"), ("5xx", "failed"))}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        elapsed: float | None = None

        async def observe(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = time.perf_counter() - start
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            # An exception escaping here becomes a 500 in the outermost error handler.
            self._record(scope, status, time.perf_counter() - start if elapsed is None else elapsed)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        method = scope["method"]
        if method not in _METHODS:
            method = "OTHER"
        route = scope.get("route")
        # The router sets scope["route"]; a request answered before routing (an idempotent replay,
        # a 413) has none, and is attributed by matching the path against the documented templates.
        template = getattr(route, "path", None) if route is not None else self._templates.match(scope)
        key = (method, template or UNMATCHED)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(*key)
        cls = _status_class(status)
        series.latency.observe(elapsed)
        series.count(cls)
        # Only requests the router handled count as business steps: a replay is not a new booking.
        if route is not None:
            if series.step is not None and cls == "2xx":
                series.step.inc()
            elif key == _HOLD_ROUTE and cls in self._holds:
                self._holds[cls].inc()


class _Templates:
    """Route templates of the app's OpenAPI document, to attribute requests the router never saw.

    Built once, on the first such request; literal paths are tried before templated ones
    (``/v1/orders/lookup`` before ``/v1/orders/{order_id}``), as the router does.
    """

    def __init__(self) -> None:
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def match(self, scope: Scope) -> str | None:
        if self._patterns is None:
            app: Any = scope.get("app")
            try:
                paths = list(app.openapi().get("paths", {}))
            except Exception:  # no app or no document: everything is unmatched
                paths = []
            paths.sort(key=lambda t: t.count("{"))
            self._patterns = [(_pattern(t), t) for t in paths]
        path = scope["path"]
        for pattern, template in self._patterns:
            if pattern.fullmatch(path):
                return template
        return None


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"({[^}]+})", template)
    return re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts))


def metrics_payload() -> tuple[bytes, str]:
    """The default registry in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

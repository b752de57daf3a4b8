"""The API with authentication and rate limiting switched off: only for ``bench/booking.py --auth-compare``.

Same app, routes, dependencies, settings and database as ``skybook serve``. Only the two adapters
behind them are replaced: the authenticator answers the principal the real authenticator resolved
the first time it saw an ``Authorization`` header (no token check, no principal look-up, no
change-signal check afterwards), and the limiter allows everything without counting. The
dependency tree is left exactly as served - FastAPI's ``dependency_overrides`` would rebuild the
overriding dependant on every request and make the "without" variant slower than the real app -
so the difference to the real app is the per-request cost of the checks themselves. It refuses to
start unless ``SKYBOOK_BENCH_WITHOUT_AUTH=yes`` (which only the bench sets): never serve it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from fastapi import FastAPI, Request

from skybook.app import create_app
from skybook.platform.ratelimit import LimitResult
from skybook.platform.security import Principal

_UNLIMITED = LimitResult(allowed=True, limit=1_000_000, remaining=1_000_000, reset_after=60)


class _FirstSight:
    """Authenticates a header once with the real authenticator, then trusts it."""

    def __init__(self, real: object) -> None:
        self._real = real
        self._seen: dict[str, Principal] = {}

    async def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        principal = self._seen.get(header)
        if principal is None:
            principal = await self._real.authenticate(request)  # type: ignore[attr-defined]
            self._seen[header] = principal
        return principal

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


class Unlimited:
    """Allows every request without counting it."""

    def __init__(self, real: object) -> None:
        self._real = real

    async def hit_all(self, limits: Sequence[tuple[str, int, str]]) -> list[LimitResult]:
        return [_UNLIMITED for _ in limits]

    async def hit(self, namespace: str, per_minute: int, *identifiers: str) -> LimitResult:
        return _UNLIMITED

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def create() -> FastAPI:
    """uvicorn factory (``--factory``), one app per worker process."""
    if os.environ.get("SKYBOOK_BENCH_WITHOUT_AUTH") != "yes":
        raise SystemExit("bench/unauthenticated_app.py is for bench/booking.py only")
    app = create_app()
    container = app.state.container
    container.authenticator = _FirstSight(container.authenticator)
    container.limiter = Unlimited(container.limiter)
    return app

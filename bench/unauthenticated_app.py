"""The API with authentication and rate limiting switched off: only for ``bench/booking.py --auth-compare``.

Same app, settings and database as ``skybook serve``. The principal dependency answers the
principal the real authenticator resolved the first time it saw an ``Authorization`` header (no
token check, no principal look-up, no change-signal check afterwards) and the rate-limit
dependency does nothing, so the difference to the real app is the per-request cost of those
checks. It refuses to start unless ``SKYBOOK_BENCH_WITHOUT_AUTH=yes`` (which only the bench sets):
never serve it.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request

from skybook.app import create_app
from skybook.platform.deps import current_principal, rate_limited
from skybook.platform.security import Principal


def create() -> FastAPI:
    """uvicorn factory (``--factory``), one app per worker process."""
    if os.environ.get("SKYBOOK_BENCH_WITHOUT_AUTH") != "yes":
        raise SystemExit("bench/unauthenticated_app.py is for bench/booking.py only")
    app = create_app()
    seen: dict[str, Principal] = {}

    async def first_sight(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        principal = seen.get(header)
        if principal is None:
            principal = await request.app.state.container.authenticator.authenticate(request)
            seen[header] = principal
        return principal

    async def unlimited() -> None:
        return None

    app.dependency_overrides[current_principal] = first_sight
    app.dependency_overrides[rate_limited] = unlimited
    return app

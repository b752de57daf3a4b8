"""Authentication of every request: Bearer access tokens (JWT) and API keys.

Principals (users and API keys with their tenant's plan) are kept in memory per process and
served without a database read while a change signal confirms them: one counter in the database
that triggers move with every change to what authentication reads (migration 0007). Each process
checks it in the background a few times a second; a principal is never served more than a second
after a change is committed (``CACHE_SECONDS``), so logout, password change, role change, key
revocation and plan changes take effect everywhere within a second. See ``PrincipalCache``.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from skybook.identity.handlers import (
    PrincipalRow,
    api_key_subject,
    identity_version,
    load_principal,
    load_principals,
    touch_api_key,
)
from skybook.identity.model import Unauthenticated
from skybook.identity.tokens import AccessClaims, InvalidToken, TokenService, digest
from skybook.platform.clock import Clock
from skybook.platform.security import Principal

CACHE_SECONDS = 1.0  # the bound: how long after a change a principal may still be served as before
# A version check starts at most every CACHE_SECONDS / 5 while requests come (see PrincipalCache).
KEEP_SECONDS = 60.0  # a principal unused this long leaves the cache
KEY_CACHE_SECONDS = 30.0  # API key credential -> key id (revocation is checked on the principal)
TOUCH_SECONDS = 60.0  # api_keys.last_used_at is written at most this often per key and process
_CACHE_MAX = 50_000
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="skybook"'}


class _TTLCache:
    """A small time-bounded cache; good enough for a one-second memo of auth look-ups."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._data: dict[Any, tuple[float, Any]] = {}

    async def get(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        if len(self._data) >= _CACHE_MAX:
            self._data.clear()
        self._data[key] = (now + self.ttl, value)
        return value

    def clear(self) -> None:
        self._data.clear()


PrincipalKey = tuple[str, uuid.UUID]
_MISSING: Any = object()
_MAX_CHECKS = 3  # version checks under way at once (each is one single-row query)


def _ignore_outcome(task: asyncio.Future[None]) -> None:
    # A failed background check is not fatal: requests past the bound wait for the next one.
    if not task.cancelled():
        task.exception()


class PrincipalCache:
    """Principals by (kind, id), kept while a change signal says they are unchanged.

    Every change to what authentication reads (logout, password or role change, key revocation,
    a tenant's plan, a plan's limits, deletions) moves one database counter, by trigger, in the
    change's own transaction (migration 0007). While requests come, the cache reads that counter
    in the background at most every ``poll_every`` seconds: one single-row query, whatever the
    number of principals. When it has not moved, every cached principal is confirmed current as
    of that check's start; when it has, the principals in use are reloaded by one batch query.

    The bound: a cached principal is served only while the last confirming check *began* less
    than ``ttl`` ago. A change committed after that check's snapshot is seen by the next check,
    which must confirm before the bound runs out, so no answer is ever based on a principal more
    than ``ttl`` older than a change. A request that finds the bound passed (checks late, the
    database unreachable) waits for a fresh check; if that fails the request fails: it never
    falls back to serving what it cannot confirm. Requests do not wait in the steady state: a
    check starts once ``poll_every`` has passed since the last one began, even while a slow one is
    still under way (up to three), so requests wait only if a check takes ``ttl - poll_every``
    or more (an overloaded process or database).
    """

    def __init__(
        self,
        ttl: float,
        load_one: Callable[[PrincipalKey], Awaitable[PrincipalRow | None]],
        load_many: Callable[[list[PrincipalKey]], Awaitable[dict[PrincipalKey, PrincipalRow | None]]],
        read_version: Callable[[], Awaitable[int]],
        *,
        poll_every: float | None = None,
        keep: float = KEEP_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.poll_every = ttl / 5 if poll_every is None else poll_every
        self.keep = keep
        self._now = monotonic
        self._load_one = load_one
        self._load_many = load_many
        self._read_version = read_version
        self._rows: dict[PrincipalKey, PrincipalRow | None] = {}
        self._used: dict[PrincipalKey, float] = {}
        self._version: int | None = None
        self._valid_until = -math.inf  # cached rows may be served while monotonic() is below this
        self._latest: asyncio.Future[None] | None = None  # the check begun last
        self._check_began = -math.inf
        self._in_flight = 0
        self._applied_began = -math.inf  # start of the check whose reload is in the cache
        self._cleared = 0
        self._pruned_at = -math.inf
        self._generation = 0  # bumped by clear() and by a seen change: older loads are not stored
        self.checks = 0  # version reads made (for tests and the bench)
        self.reloads = 0  # batch reloads after a change

    async def get(self, key: PrincipalKey) -> PrincipalRow | None:
        now = self._now()
        if now >= self._valid_until:
            await self._confirm()
        elif now - self._check_began >= self.poll_every and self._in_flight < _MAX_CHECKS:
            self._start_check()
        hit = self._rows.get(key, _MISSING)
        if hit is not _MISSING and self._now() < self._valid_until:
            self._used[key] = now
            return hit  # type: ignore[no-any-return]
        generation = self._generation
        row = await self._load_one(key)
        if generation == self._generation:
            if len(self._rows) >= _CACHE_MAX:
                self.clear()
            self._rows[key] = row
            self._used[key] = self._now()
        return row

    def _start_check(self) -> asyncio.Future[None]:
        self._latest = asyncio.ensure_future(self._check_version())
        self._latest.add_done_callback(_ignore_outcome)
        return self._latest

    async def _confirm(self) -> None:
        # The latest check may have begun too long ago to confirm up to now; then a new one.
        for _ in range(2):
            if self._now() < self._valid_until:
                return
            latest = self._latest
            if latest is None or latest.done():
                latest = self._start_check()
            # Shielded: a request that gives up must not cancel the check others wait for.
            await asyncio.shield(latest)

    async def _check_version(self) -> None:
        # Checks may overlap (a slow one does not hold back the next): each confirms up to its own
        # start, and a reload is applied only if no check begun later has applied one already.
        began = self._check_began = self._now()
        cleared = self._cleared
        self._in_flight += 1
        try:
            version = await self._read_version()
            self.checks += 1
            if cleared != self._cleared:
                return
            if version == self._version:
                self._valid_until = max(self._valid_until, began + self.ttl)
                if began - self._pruned_at >= self.keep / 4:
                    self._pruned_at = began
                    self._drop_unused(began)
                return
            if began < self._applied_began:
                return  # a later check has seen at least this version
            # Something changed (or this is the first check): loads begun before now may predate it.
            self._generation += 1
            self._drop_unused(began)
            recent = list(self._used)
            rows = await self._load_many(recent) if recent else {}
            self.reloads += 1
            if cleared != self._cleared or began < self._applied_began:
                return
            for k in recent:
                self._rows[k] = rows.get(k)
            self._version = version
            self._applied_began = began
            self._valid_until = max(self._valid_until, began + self.ttl)
        finally:
            self._in_flight -= 1

    def _drop_unused(self, now: float) -> None:
        for k in [k for k, used in self._used.items() if now - used >= self.keep]:
            del self._used[k]
            self._rows.pop(k, None)

    def clear(self) -> None:
        self._cleared += 1
        self._generation += 1
        self._rows.clear()
        self._used.clear()
        self._version = None
        self._valid_until = -math.inf


class Authenticator:
    """Resolves the ``Authorization`` header to a principal, or answers 401."""

    def __init__(
        self, engine: AsyncEngine, tokens: TokenService, clock: Clock, *, cache_seconds: float = CACHE_SECONDS
    ) -> None:
        self.engine = engine
        # The version read outside a transaction: one round trip, no BEGIN/ROLLBACK around it.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.tokens = tokens
        self.clock = clock
        self.principals = PrincipalCache(cache_seconds, self._load_principal, self._load_principals, self._read_version)
        self._keys = _TTLCache(KEY_CACHE_SECONDS)
        self._touched: dict[uuid.UUID, float] = {}
        self._verified: dict[str, AccessClaims] = {}

    async def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if not credential:
            credential = request.headers.get("x-api-key", "").strip()
            scheme = "bearer" if credential else scheme
        # Tokens and keys are printable ASCII; anything else is refused before it reaches a query.
        printable = credential.isascii() and credential.isprintable()
        if scheme.lower() != "bearer" or not credential or len(credential) > 4096 or not printable:
            raise Unauthenticated("send a Bearer access token or an API key", headers=_CHALLENGE)
        if credential.startswith("sbk_"):
            return await self._api_key(credential)
        return await self._access_token(credential)

    async def _access_token(self, token: str) -> Principal:
        now = self.clock.now()
        # A signature verified once stays verified; only the time window is checked again.
        claims = self._verified.get(token)
        if claims is None or not claims.not_before <= now < claims.expires_at:
            try:
                claims = self.tokens.verify(token, now=now)
            except InvalidToken:
                raise Unauthenticated("the access token is not valid", headers=_CHALLENGE) from None
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[token] = claims
        row = await self._principal(claims.subject, claims.kind)
        if row is None or not row.active:
            raise Unauthenticated("the access token is not valid", headers=_CHALLENGE)
        if claims.kind == "user" and claims.session_version != row.session_version:
            raise Unauthenticated("the session has ended; log in again", headers=_CHALLENGE)
        return row.principal

    async def _api_key(self, credential: str) -> Principal:
        async def find() -> uuid.UUID | None:
            async with self.engine.connect() as conn:
                return await api_key_subject(conn, credential, self.clock.now())

        # The credential -> key mapping never changes; a revoked or deleted key is refused below,
        # by its principal, which the change signal keeps current.
        subject = await self._keys.get(digest(credential), find)
        row = await self._principal(subject, "api_key") if subject is not None else None
        if row is None or not row.active:
            raise Unauthenticated("the API key is not valid", headers=_CHALLENGE)
        if subject is not None:
            now = time.monotonic()
            if now - self._touched.get(subject, -math.inf) >= TOUCH_SECONDS:
                # At most once a minute per key and process, and a no-op unless a minute passed.
                if len(self._touched) >= _CACHE_MAX:
                    self._touched.clear()
                self._touched[subject] = now
                async with self.engine.begin() as conn:
                    await touch_api_key(conn, subject, self.clock.now())
        return row.principal

    async def _principal(self, subject: uuid.UUID, kind: str) -> PrincipalRow | None:
        return await self.principals.get((kind, subject))

    async def _load_principal(self, key: PrincipalKey) -> PrincipalRow | None:
        async with self.engine.connect() as conn:
            return await load_principal(conn, key[1], key[0])

    async def _load_principals(self, keys: list[PrincipalKey]) -> dict[PrincipalKey, PrincipalRow | None]:
        async with self.engine.connect() as conn:
            return await load_principals(conn, keys)

    async def _read_version(self) -> int:
        async with self._autocommit.connect() as conn:
            return await identity_version(conn)

    def forget(self) -> None:
        """Drop cached look-ups (tests: start from nothing; changes are signalled without it)."""
        self.principals.clear()
        self._keys.clear()
        self._touched.clear()
        self._verified.clear()

"""Authentication of every request: Bearer access tokens (JWT) and API keys.

Look-ups of users and keys are cached for at most a second per process, so logout, password
change, role change and key revocation take effect everywhere within a second. When a cached
principal's second is up, one query reloads every principal the process used in the last second,
so a busy process costs one database read per second in all, not one per active principal.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from skybook.identity.handlers import PrincipalRow, api_key_subject, load_principal, load_principals, touch_api_key
from skybook.identity.model import Unauthenticated
from skybook.identity.tokens import AccessClaims, InvalidToken, TokenService, digest
from skybook.platform.clock import Clock
from skybook.platform.security import Principal

CACHE_SECONDS = 1.0
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
_EARLY = 0.7  # share of the ttl after which a batch reload starts in the background


def _ignore_outcome(task: asyncio.Future[None]) -> None:
    # A failed background reload is not fatal: the next request past the ttl reloads and sees it.
    if not task.cancelled():
        task.exception()


class _PrincipalCache:
    """Principals by (kind, id), each served for at most ``ttl`` seconds after its load began.

    A principal seen for the first time is loaded alone. Every principal used within the last
    ``ttl`` is reloaded by one shared batch query, so they all fall due together: one query per
    ``ttl`` for the whole process, however many principals are active. The batch starts in the
    background once a principal in use is 70 % through its ``ttl``; a request that finds its
    principal out of date waits for the batch (never serves it stale). Principals unused for a
    whole ``ttl`` are dropped by the batch.
    """

    def __init__(
        self,
        ttl: float,
        load_one: Callable[[PrincipalKey], Awaitable[PrincipalRow | None]],
        load_many: Callable[[list[PrincipalKey]], Awaitable[dict[PrincipalKey, PrincipalRow | None]]],
    ) -> None:
        self.ttl = ttl
        self._load_one = load_one
        self._load_many = load_many
        self._rows: dict[PrincipalKey, tuple[float, PrincipalRow | None]] = {}  # key -> (load began, row)
        self._used: dict[PrincipalKey, float] = {}
        self._batch: asyncio.Future[None] | None = None
        self._generation = 0  # bumped by clear(): loads begun before it are not stored

    async def get(self, key: PrincipalKey) -> PrincipalRow | None:
        for attempt in range(3):
            now = time.monotonic()
            hit = self._rows.get(key)
            if hit is None:
                break
            self._used[key] = now
            age = now - hit[0]
            if age < self.ttl:
                if age > self.ttl * _EARLY and (self._batch is None or self._batch.done()):
                    # Reload in the background before the second is up, so requests rarely wait
                    # for it (and do not all stall, then all rush to the database, together).
                    self._batch = asyncio.ensure_future(self._reload_recent())
                    self._batch.add_done_callback(_ignore_outcome)
                return hit[1]
            if attempt < 2:
                # A batch already under way may have begun before this key was due; then the next one.
                await self._refresh()
        began, generation = time.monotonic(), self._generation
        row = await self._load_one(key)
        if generation == self._generation:
            if len(self._rows) >= _CACHE_MAX:
                self.clear()
            self._rows[key] = (began, row)
            self._used[key] = began
        return row

    async def _refresh(self) -> None:
        batch = self._batch
        if batch is None or batch.done():
            batch = self._batch = asyncio.ensure_future(self._reload_recent())
        # Shielded: a request that gives up must not cancel the batch others wait for.
        await asyncio.shield(batch)

    async def _reload_recent(self) -> None:
        began, generation = time.monotonic(), self._generation
        recent = [k for k, used in self._used.items() if began - used < self.ttl]
        rows = await self._load_many(recent)
        if generation != self._generation:
            return
        for k in recent:
            self._rows[k] = (began, rows.get(k))
        for k in [k for k, used in self._used.items() if began - used >= self.ttl]:
            del self._used[k]
            self._rows.pop(k, None)

    def clear(self) -> None:
        self._generation += 1
        self._rows.clear()
        self._used.clear()


class Authenticator:
    """Resolves the ``Authorization`` header to a principal, or answers 401."""

    def __init__(
        self, engine: AsyncEngine, tokens: TokenService, clock: Clock, *, cache_seconds: float = CACHE_SECONDS
    ) -> None:
        self.engine = engine
        self.tokens = tokens
        self.clock = clock
        self._principals = _PrincipalCache(cache_seconds, self._load_principal, self._load_principals)
        self._keys = _TTLCache(cache_seconds)
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
                subject = await api_key_subject(conn, credential, self.clock.now())
            if subject is not None:
                # At most once a second per process (the cache), and a no-op unless a minute passed.
                async with self.engine.begin() as conn:
                    await touch_api_key(conn, subject, self.clock.now())
            return subject

        subject = await self._keys.get(digest(credential), find)
        row = await self._principal(subject, "api_key") if subject is not None else None
        if row is None or not row.active:
            raise Unauthenticated("the API key is not valid", headers=_CHALLENGE)
        return row.principal

    async def _principal(self, subject: uuid.UUID, kind: str) -> PrincipalRow | None:
        return await self._principals.get((kind, subject))

    async def _load_principal(self, key: PrincipalKey) -> PrincipalRow | None:
        async with self.engine.connect() as conn:
            return await load_principal(conn, key[1], key[0])

    async def _load_principals(self, keys: list[PrincipalKey]) -> dict[PrincipalKey, PrincipalRow | None]:
        async with self.engine.connect() as conn:
            return await load_principals(conn, keys)

    def forget(self) -> None:
        """Drop cached look-ups (tests, and after this process itself revoked something)."""
        self._principals.clear()
        self._keys.clear()
        self._verified.clear()

"""Idempotency-Key support for every POST: a replay returns the first response.

Pure ASGI middleware, so routes stay unaware of it. The key is reserved in its own short
transaction before the request runs (a concurrent request with the same key gets 409
``idempotency_in_progress``), and the response is stored when it is known. A response of
5xx or a crash leaves no stored answer, so the client may retry with the same key; handlers
are themselves guarded by state checks (an order cannot be paid or confirmed twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skybook.platform.clock import Clock
from skybook.platform.db import UTCDateTime, insert_ignoring_conflicts, metadata
from skybook.platform.errors import DomainError
from skybook.platform.problems import read_body, replay_body, send_problem

log = logging.getLogger("skybook.idempotency")

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("headers", sa.JSON),
    sa.Column("body", sa.LargeBinary),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("locked_until", UTCDateTime, nullable=False),
)

KEY_MAX_LENGTH = 255
# How long a reservation blocks the key when its request never finishes (process crash). A request
# still running renews its reservation every RENEW_EVERY_S, so the TTL need not cover the longest
# request: it only bounds how long a retry waits after the process that held the key died.
RESERVATION_TTL = timedelta(seconds=15)
RENEW_EVERY_S = 5.0
# Headers worth replaying; the rest belong to the transport.
_REPLAYED_HEADERS = {b"content-type", b"location"}

Transaction = Callable[[], Any]


class IdempotencyMiddleware:
    """Applies ``Idempotency-Key`` to POST requests under ``/v1``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        engine_factory: Callable[[], AsyncEngine],
        clock: Clock,
        write_lock: Callable[[], Any] | None = None,
        caller: Callable[[Scope], Awaitable[str]] | None = None,
    ) -> None:
        self.app = app
        self._engine_factory = engine_factory
        self._clock = clock
        self._write_lock = write_lock
        self._caller = caller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        key = _header(scope, b"idempotency-key")
        if key is None:
            await self.app(scope, receive, send)
            return
        if not key or len(key) > KEY_MAX_LENGTH or not key.isprintable():
            await send_problem(
                send,
                status=400,
                code="invalid_idempotency_key",
                title="Invalid Idempotency-Key",
                detail=f"Idempotency-Key must be 1 to {KEY_MAX_LENGTH} printable characters",
            )
            return

        body = await read_body(receive)
        fingerprint = hashlib.sha256(scope["path"].encode() + b"\n" + body).hexdigest()
        scope_name = await self._scope_of(scope)
        store = _Store(self._engine_factory(), self._clock, self._write_lock)
        existing = await store.reserve(scope_name, key, fingerprint)
        if existing is not None:
            await _answer_existing(send, existing, fingerprint)
            return

        captured: dict[str, Any] = {"status": 500, "headers": [], "body": bytearray()}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
            await send(message)

        renewing = asyncio.create_task(_keep_reserved(store, scope_name, key))
        try:
            await self.app(scope, replay_body(body, receive), capture)
        except BaseException:
            await _stop(renewing)
            await store.forget(scope_name, key)
            raise
        await _stop(renewing)
        if captured["status"] >= 500:
            await store.forget(scope_name, key)
        else:
            headers = {k.decode(): v.decode() for k, v in captured["headers"] if k.lower() in _REPLAYED_HEADERS}
            await store.complete(scope_name, key, captured["status"], headers, bytes(captured["body"]))

    async def _scope_of(self, scope: Scope) -> str:
        """Keys are per caller: one principal's key never replays another principal's answer."""
        if self._caller is None:
            return "public"
        try:
            return await self._caller(scope)
        except DomainError:
            # No valid credentials: the route itself answers 401, or needs none (log-in, sign-up).
            return "anonymous"


async def _keep_reserved(store: _Store, scope: str, key: str) -> None:
    """Renew the reservation while the request runs (it is cancelled when the request ends)."""
    while True:
        await asyncio.sleep(RENEW_EVERY_S)
        try:
            await store.renew(scope, key)
        except Exception:  # a failed renewal must not fail the request; the next one may succeed
            log.warning("could not renew the reservation of an Idempotency-Key", exc_info=True)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _Store:
    def __init__(self, engine: AsyncEngine, clock: Clock, write_lock: Callable[[], Any] | None) -> None:
        self.engine = engine
        self.clock = clock
        self.write_lock = write_lock

    async def _tx(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        lock = self.write_lock() if self.write_lock else None
        if lock is not None:
            async with lock, self.engine.begin() as conn:
                return await work(conn)
        async with self.engine.begin() as conn:
            return await work(conn)

    async def reserve(self, scope: str, key: str, fingerprint: str) -> sa.Row[Any] | None:
        """Reserve the key; returns the existing row when someone else holds or answered it."""
        now = self.clock.now()
        t = idempotency_keys.c

        async def work(conn: Any) -> sa.Row[Any] | None:
            inserted = await conn.execute(
                insert_ignoring_conflicts(conn, idempotency_keys).values(
                    scope=scope,
                    key=key,
                    fingerprint=fingerprint,
                    created_at=now,
                    locked_until=now + RESERVATION_TTL,
                )
            )
            if inserted.rowcount:
                return None
            # Take over a reservation whose request died without answering.
            taken = await conn.execute(
                sa.update(idempotency_keys)
                .where(
                    t.scope == scope,
                    t.key == key,
                    t.status_code.is_(None),
                    t.locked_until < now,
                    t.fingerprint == fingerprint,
                )
                .values(locked_until=now + RESERVATION_TTL)
            )
            if taken.rowcount:
                return None
            row: sa.Row[Any] | None = (
                await conn.execute(sa.select(idempotency_keys).where(t.scope == scope, t.key == key))
            ).first()
            return row

        result: sa.Row[Any] | None = await self._tx(work)
        return result

    async def renew(self, scope: str, key: str) -> None:
        """Push the reservation's expiry one TTL past now (only while it has no answer)."""
        t = idempotency_keys.c
        until = self.clock.now() + RESERVATION_TTL

        async def work(conn: Any) -> None:
            await conn.execute(
                sa.update(idempotency_keys)
                .where(t.scope == scope, t.key == key, t.status_code.is_(None))
                .values(locked_until=until)
            )

        await self._tx(work)

    async def complete(self, scope: str, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
        t = idempotency_keys.c

        async def work(conn: Any) -> None:
            await conn.execute(
                sa.update(idempotency_keys)
                .where(t.scope == scope, t.key == key)
                .values(status_code=status, headers=headers, body=body)
            )

        await self._tx(work)

    async def forget(self, scope: str, key: str) -> None:
        t = idempotency_keys.c

        async def work(conn: Any) -> None:
            await conn.execute(
                sa.delete(idempotency_keys).where(t.scope == scope, t.key == key, t.status_code.is_(None))
            )

        await self._tx(work)


async def _answer_existing(send: Send, row: sa.Row[Any], fingerprint: str) -> None:
    if row.fingerprint != fingerprint:
        await send_problem(
            send,
            status=422,
            code="idempotency_key_reused",
            title="Idempotency-Key reused",
            detail="this Idempotency-Key was used with a different request; use a new key for a new request",
        )
        return
    if row.status_code is None:
        await send_problem(
            send,
            status=409,
            code="idempotency_in_progress",
            title="Request in progress",
            detail="a request with this Idempotency-Key is still being processed; retry shortly",
            headers=[(b"retry-after", b"1")],
        )
        return
    headers = [(k.encode(), v.encode()) for k, v in (row.headers or {}).items()]
    headers.append((b"idempotent-replayed", b"true"))
    headers.append((b"content-length", str(len(row.body or b"")).encode()))
    await send({"type": "http.response.start", "status": row.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": row.body or b""})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            try:
                return str(v.decode("latin-1"))
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
                return ""
    return None

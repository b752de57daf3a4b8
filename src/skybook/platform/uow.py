"""Unit of work: one database transaction plus the events it raised, committed atomically."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from skybook.platform.context import correlation_id
from skybook.platform.errors import Busy
from skybook.platform.events import Event
from skybook.platform.outbox import outbox, outbox_rows

# PostgreSQL SQLSTATEs that mean "someone else holds what you need": lock_not_available,
# deadlock_detected, serialization_failure. The caller gets a retryable 503, not a 500.
_BUSY_SQLSTATES = frozenset({"55P03", "40P01", "40001"})
_INSERT_OUTBOX = sa.insert(outbox)


class UnitOfWork:
    """``async with uow:`` opens a transaction; ``commit()`` writes the outbox and commits.

    Leaving the block without ``commit()`` rolls everything back, events included.
    """

    conn: AsyncConnection

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write_lock: asyncio.Lock | None = None,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._write_lock = write_lock
        self._after_commit = after_commit
        self._events: list[Event] = []
        self._committed = False

    async def __aenter__(self) -> Self:
        # SQLite has one writer at a time; queueing writers here is cheaper and fairer than
        # letting them spin on SQLITE_BUSY.
        if self._write_lock is not None:
            await self._write_lock.acquire()
        try:
            conn = await self._engine.connect()
            if self._write_lock is not None:
                conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            self.conn = conn
            await conn.begin()
        except BaseException:
            if self._write_lock is not None:
                self._write_lock.release()
            raise
        return self

    def emit(self, *events: Event) -> None:
        """Queue events to be written to the outbox when (and only if) the transaction commits."""
        cid = correlation_id.get()
        for e in events:
            if cid is not None and e.correlation_id is None:
                object.__setattr__(e, "correlation_id", cid)
            self._events.append(e)

    async def commit(self) -> None:
        """Write queued events to the outbox and commit the transaction."""
        if self._events:
            await self.conn.execute(_INSERT_OUTBOX, outbox_rows(self._events))
        await self.conn.commit()
        had_events = bool(self._events)
        self._events = []
        self._committed = True
        if had_events and self._after_commit is not None:
            self._after_commit()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed:
                await self.conn.rollback()
            await self.conn.close()
        finally:
            if self._write_lock is not None:
                self._write_lock.release()
        if isinstance(exc, sa.exc.DBAPIError) and _sqlstate(exc) in _BUSY_SQLSTATES:
            raise Busy("the inventory is busy; retry the request") from exc


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)

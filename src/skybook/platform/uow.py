"""Unit of work: one database transaction plus the events it raised, committed atomically."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from skybook.platform.context import correlation_id
from skybook.platform.dberrors import BUSY_SQLSTATES
from skybook.platform.errors import Busy, DomainError
from skybook.platform.events import Event
from skybook.platform.outbox import outbox, outbox_rows
from skybook.platform.pgraw import REFUSED_SQLSTATE, ConnectionLost, StatementRefused, compile_raw

_INSERT_OUTBOX = sa.insert(outbox)
_PG_PREPARER = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]

Rows = Sequence[Mapping[str, Any]]
_Shape = tuple[tuple[sa.Table, tuple[str, ...], int], ...]
_combined_cache: dict[_Shape, sa.TextClause] = {}
# Built once per table: a statement whose values arrive as parameters is compiled once and then found
# in the cache by identity, instead of being rebuilt (and its cache key recomputed) on every write.
_plain_inserts: dict[sa.Table, sa.Insert] = {outbox: _INSERT_OUTBOX}


def _insert_into(table: sa.Table) -> sa.Insert:
    stmt = _plain_inserts.get(table)
    if stmt is None:
        stmt = _plain_inserts[table] = sa.insert(table)
    return stmt


def _combined_insert(parts: Sequence[tuple[sa.Table, Rows]]) -> tuple[sa.TextClause, dict[str, Any]]:
    """One INSERT statement (PostgreSQL) writing rows to several tables: every part but the last
    as a data-modifying CTE. Foreign keys between the parts hold: PostgreSQL checks them at the end
    of the statement. Built once per shape (tables, columns, row counts) and then reused; the values
    travel as typed parameters, so each column's bind processing still applies.

    It is a ``text()`` construct on purpose: SQLAlchemy cannot compute a cache key for an INSERT
    that carries other INSERTs as CTEs, so the same statement written with ``insert().add_cte()``
    was compiled again on every execution (about a sixth of a hold's CPU, seen with py-spy). A
    ``text()`` with typed bind parameters is keyed by its string and compiled once.
    """
    shape: _Shape = tuple((table, tuple(rows[0]), len(rows)) for table, rows in parts)
    stmt = _combined_cache.get(shape)
    if stmt is None:
        stmt = _combined_cache[shape] = _build_combined(shape)
    params = {
        f"p{p}_{i}_{c}": row[c] for p, (_, rows) in enumerate(parts) for i, row in enumerate(rows) for c in shape[p][1]
    }
    return stmt, params


def _build_combined(shape: _Shape) -> sa.TextClause:
    quote = _PG_PREPARER.quote
    binds: list[sa.BindParameter[Any]] = []
    inserts: list[str] = []
    for p, (table, cols, n) in enumerate(shape):
        rows = []
        for i in range(n):
            names = [f"p{p}_{i}_{c}" for c in cols]
            binds.extend(sa.bindparam(name, type_=table.c[c].type) for name, c in zip(names, cols, strict=True))
            rows.append("(" + ", ".join(f":{name}" for name in names) + ")")
        columns = ", ".join(quote(c) for c in cols)
        # Only our own table and column names (quoted) and parameter placeholders: no value is in the SQL.
        inserts.append(f"INSERT INTO {quote(table.name)} ({columns}) VALUES {', '.join(rows)}")  # noqa: S608
    if len(inserts) == 1:
        return sa.text(inserts[0]).bindparams(*binds)
    ctes = ", ".join(f"write_{p} AS ({sql})" for p, sql in enumerate(inserts[:-1]))
    return sa.text(f"WITH {ctes} {inserts[-1]}").bindparams(*binds)


class UnitOfWork:
    """``async with uow:`` opens a transaction; ``commit()`` writes the outbox and commits.

    Leaving the block without ``commit()`` rolls everything back, events included.

    Two ways to run statements inside it:

    * ``uow.conn``: the SQLAlchemy connection, for everything;
    * ``uow.one(stmt, params)``: one row (or None) of a statement built once at module level. With
      ``raw=True`` on PostgreSQL the whole transaction runs on the asyncpg connection under the
      pooled SQLAlchemy one (``skybook.platform.pgraw``): the hot write paths (holds) skip
      SQLAlchemy's execution layer, which cost more CPU than the statements themselves. Such a unit
      of work has no ``conn``; on SQLite ``raw`` changes nothing.

    ``mixed=True`` (with ``raw``) is for code that is partly on each side, the event consumers:
    asyncpg begins the transaction on entry and commits it, the unit of work's own statements
    (``one``, ``all``, the inbox claim) go by asyncpg, and ``conn`` is lent for the rest, switched
    to autocommit so that SQLAlchemy begins nothing of its own: its statements run in the asyncpg
    transaction. A worker's batch of four events so costs about 30 % less CPU (bench/consumer_uow.py).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write_lock: asyncio.Lock | None = None,
        after_commit: Callable[[], None] | None = None,
        raw: bool = False,
        mixed: bool = False,
    ) -> None:
        self._engine = engine
        self._write_lock = write_lock
        self._after_commit = after_commit
        self._events: list[Event] = []
        self._committed = False
        self._raw = raw and engine.dialect.name == "postgresql"
        self._mixed = mixed and self._raw
        self._conn: AsyncConnection | None = None
        self._pg: Any = None  # asyncpg.Connection of a raw unit of work
        self._pg_tx: Any = None  # its asyncpg Transaction, started on the first statement
        self._dbapi: Any = None  # SQLAlchemy's adapter of it, in autocommit while mixed
        self._lost = False

    @property
    def dialect_name(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return self._engine.dialect.name

    @property
    def conn(self) -> AsyncConnection:
        """The SQLAlchemy connection of this transaction (on a raw unit of work only when mixed)."""
        if self._raw and not self._mixed:
            raise RuntimeError("a raw unit of work runs its statements with uow.one(), not uow.conn")
        if self._conn is None:
            raise RuntimeError("the unit of work is not open")
        return self._conn

    async def __aenter__(self) -> Self:
        # SQLite has one writer at a time; queueing writers here is cheaper and fairer than
        # letting them spin on SQLITE_BUSY.
        if self._write_lock is not None:
            await self._write_lock.acquire()
        try:
            conn = await self._engine.connect()
            if self._raw:
                # The pool's connection, driven by asyncpg directly; SQLAlchemy only lends it out
                # and takes it back (its reset on return finds no transaction of its own).
                self._conn = conn
                pooled = await conn.get_raw_connection()
                self._pg = pooled.driver_connection
                if self._mixed:
                    # Autocommit only tells SQLAlchemy's asyncpg adapter not to BEGIN (nothing is
                    # sent; set on the DBAPI connection, so the pool has no isolation level to reset
                    # on return): the transaction is the one begun here, before ``conn`` can run.
                    self._dbapi = pooled.dbapi_connection
                    self._dbapi.autocommit = True
                    await self._raw_tx()
                return self
            if self._write_lock is not None:
                conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            self._conn = conn
            await conn.begin()
        except BaseException:
            if self._write_lock is not None:
                self._write_lock.release()
            raise
        return self

    async def _raw_tx(self) -> Any:
        if self._pg_tx is None:
            tx = self._pg.transaction()
            await tx.start()
            self._pg_tx = tx
        return self._pg

    async def one(self, stmt: sa.ClauseElement, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The first row of ``stmt`` as a mapping by column name, or None. Build ``stmt`` once."""
        if self._raw:
            pg = await self._raw_tx()
            raw = compile_raw(stmt)
            row: Mapping[str, Any] | None = await pg.fetchrow(raw.sql, *raw.args(params))
            return row
        result = await self.conn.execute(stmt, params)  # type: ignore[call-overload]
        found: Mapping[str, Any] | None = result.mappings().first()
        return found

    async def execute(self, stmt: sa.ClauseElement, params: Mapping[str, Any]) -> None:
        """Run ``stmt`` for its effect (no rows wanted). Build ``stmt`` once."""
        if self._raw:
            pg = await self._raw_tx()
            raw = compile_raw(stmt)
            await pg.execute(raw.sql, *raw.args(params))
            return
        await self.conn.execute(stmt, params)  # type: ignore[call-overload]

    async def all(self, stmt: sa.ClauseElement, params: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        """Every row of ``stmt`` as mappings by column name. Build ``stmt`` once."""
        if self._raw:
            pg = await self._raw_tx()
            raw = compile_raw(stmt)
            rows: Sequence[Mapping[str, Any]] = await pg.fetch(raw.sql, *raw.args(params))
            return rows
        result = await self.conn.execute(stmt, params)  # type: ignore[call-overload]
        return list(result.mappings())

    def emit(self, *events: Event) -> None:
        """Queue events to be written to the outbox when (and only if) the transaction commits."""
        self._events.extend(stamped(*events))

    async def commit_statement(self, stmt: sa.ClauseElement, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Run one statement that writes everything this unit of work writes, its events included,
        and commit; its first row (or None). Raw units of work only.

        Before any other statement it runs as its own transaction (PostgreSQL's implicit one): one
        round trip instead of BEGIN, the statement and COMMIT - what the single-segment hold is.
        A statement that fails leaves nothing behind; one that writes nothing commits nothing.
        """
        if not self._raw:
            raise RuntimeError("commit_statement() needs a raw unit of work (PostgreSQL)")
        if self._events:
            raise RuntimeError("events queued with emit() would be lost: write them in the statement")
        if self._pg_tx is None and self._pg.is_in_transaction():
            # Never run "its own transaction" inside someone else's: it would never commit.
            self._lost = True
            raise ConnectionLost("the pooled connection is inside a transaction it should not be in")
        raw = compile_raw(stmt)
        try:
            row: Mapping[str, Any] | None = await self._pg.fetchrow(raw.sql, *raw.args(params))
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == REFUSED_SQLSTATE:
                raise StatementRefused(str(getattr(exc, "message", exc))) from exc
            raise
        if self._pg_tx is not None:
            await self._pg_tx.commit()
        self._committed = True
        if self._after_commit is not None:
            self._after_commit()
        return row

    async def commit(self, *, inserts: Sequence[tuple[sa.Table, Rows]] = ()) -> None:
        """Write ``inserts`` (rows per table, every row of a table with the same keys, in that order)
        and the queued events to the outbox, then commit.

        On PostgreSQL the rows and the events go in one statement: one round trip instead of one per
        table, which is most of what a short transaction like a hold costs.
        """
        parts = [(table, rows) for table, rows in inserts if rows]
        if self._events:
            parts.append((outbox, outbox_rows(self._events)))
        if self._raw:
            pg = await self._raw_tx()
            if parts:
                stmt, params = _combined_insert(parts)
                raw = compile_raw(stmt)
                await pg.execute(raw.sql, *raw.args(params))
            await self._pg_tx.commit()
        else:
            conn = self.conn
            if len(parts) > 1 and conn.dialect.name == "postgresql":
                await conn.execute(*_combined_insert(parts))
            else:
                for table, rows in parts:
                    await conn.execute(_insert_into(table), list(rows))
            await conn.commit()
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
            conn = self._conn
            if conn is not None:
                if self._raw:
                    await self._close_raw(conn, exc)
                else:
                    if not self._committed:
                        await conn.rollback()
                    await conn.close()
        finally:
            if self._write_lock is not None:
                self._write_lock.release()
        if isinstance(exc, sa.exc.DBAPIError) and _sqlstate(exc) in BUSY_SQLSTATES:
            raise Busy("the inventory is busy; retry the request") from exc
        if self._raw and exc is not None:
            if getattr(exc, "sqlstate", None) in BUSY_SQLSTATES:
                raise Busy("the inventory is busy; retry the request") from exc
            if self._lost:
                raise ConnectionLost("the database connection was lost during the transaction") from exc

    async def _close_raw(self, conn: AsyncConnection, exc: BaseException | None) -> None:
        """Give the connection back only when it is certainly idle and outside any transaction.

        SQLAlchemy's reset-on-return knows nothing of a transaction started through asyncpg. A
        connection returned mid-statement (the request was cancelled while asyncpg waited) or
        inside a transaction would be lent to the next request in that state: asyncpg would turn
        that request's BEGIN into a SAVEPOINT of the stale transaction, and its "committed" writes
        and their row locks would stay open. So anything but a clean exit closes the connection.
        """
        import asyncpg  # type: ignore[import-untyped]

        # A domain refusal or an error the server reported leaves the connection idle; a cancelled
        # or otherwise interrupted call may not. (SQLAlchemy wraps what a mixed unit of work's
        # ``conn`` met; a rollback that fails below still keeps the connection out of the pool.)
        server_error = asyncpg.PostgresError | sa.exc.DBAPIError
        clean = exc is None or isinstance(exc, DomainError | server_error)
        clean = clean and not isinstance(exc, asyncpg.PostgresConnectionError)
        if clean and self._pg_tx is not None and not self._committed:
            try:
                await self._pg_tx.rollback()
            except (Exception, asyncio.CancelledError):  # any failure: do not reuse the connection
                clean = False
        if not clean or self._pg.is_closed() or self._pg.is_in_transaction():
            # The pool must not lend this connection again: SQLAlchemy did not see it fail.
            broke = (OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.ConnectionDoesNotExistError)
            if isinstance(exc, broke) or self._pg.is_closed():
                self._lost = True  # answered 503 database_unavailable; otherwise the error stands
            await conn.invalidate()
        if self._dbapi is not None:
            self._dbapi.autocommit = False  # back to the pool as SQLAlchemy lent it
        await conn.close()


def stamped(*events: Event) -> tuple[Event, ...]:
    """``events`` with the request's correlation id where they have none (the id follows the request)."""
    cid = correlation_id.get()
    if cid is not None:
        for e in events:
            if e.correlation_id is None:
                object.__setattr__(e, "correlation_id", cid)
    return events


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)

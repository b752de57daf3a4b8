"""Which database errors are the database's state rather than a fault of the code that met them.

Shared by the HTTP layer (a 503 the client may retry instead of a 500) and the event consumers (a
retry that does not use up an event's attempts): a lock held by someone else or a database that is
restarting passes; a wrong query does not.
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa

from skybook.platform.errors import Busy
from skybook.platform.pgraw import ConnectionLost

# PostgreSQL SQLSTATEs that mean "someone else holds what you need": lock_not_available,
# deadlock_detected, serialization_failure. The caller gets a retryable 503, not a 500.
BUSY_SQLSTATES = frozenset({"55P03", "40P01", "40001"})

# SQLSTATE classes and codes that mean "the database cannot serve us now", not "our query is wrong":
# connection exceptions (08), insufficient resources such as too_many_connections (53), operator
# intervention such as admin_shutdown or cannot_connect_now (57P), an unknown database (3D000).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P", "3D000")


_RAW_CONNECTION_ERRORS = (
    ConnectionLost,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error means the database is unreachable or refusing connections."""
    if isinstance(exc, _RAW_CONNECTION_ERRORS):
        return True  # the raw write paths (skybook.platform.pgraw) meet asyncpg's errors unwrapped
    if isinstance(exc, OSError | TimeoutError) and not isinstance(exc, sa.exc.DBAPIError):
        # asyncpg raises a refused or timed-out connect as it is, unwrapped by SQLAlchemy.
        return _raised_by_database_driver(exc)
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # the driver's error is a few causes down
        seen.add(id(cur))
        if isinstance(cur, OSError | TimeoutError):
            return True
        state = getattr(cur, "sqlstate", None) or getattr(cur, "pgcode", None)
        if isinstance(state, str) and state.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
            return True
        cur = cur.__cause__ or getattr(cur, "orig", None)
    return False


_DRIVER_MODULES = ("asyncpg.", "sqlalchemy.pool", "sqlalchemy.engine", "aiosqlite")


def _raised_by_database_driver(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


def database_busy(exc: BaseException) -> bool:
    """Whether an error means a lock or serialization conflict that a retry can get past.

    Units of work raise ``Busy`` for these themselves; this catches the same errors raised outside
    one (the idempotency-key middleware's own short transactions).
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if getattr(cur, "sqlstate", None) in BUSY_SQLSTATES or getattr(cur, "pgcode", None) in BUSY_SQLSTATES:
            return True
        cur = cur.__cause__ or getattr(cur, "orig", None)
    return False


def retry_can_help(exc: BaseException) -> bool:
    """Whether the same work may succeed later unchanged: busy, unreachable or out of connections."""
    return (
        isinstance(exc, Busy | sa.exc.TimeoutError)  # a lock wait that timed out; the pool stayed full
        or database_busy(exc)
        or database_unavailable(exc)
    )

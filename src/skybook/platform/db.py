"""Database engine, shared metadata and portable column types (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

# One naming convention so Alembic migrations name constraints the same on every database.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive text, so we re-attach UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY, so big integer keys fall back to INTEGER there.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def is_sqlite(url: str) -> bool:
    """Whether a database URL points at SQLite."""
    return url.startswith("sqlite")


def listen_dsn(database_url: str) -> str | None:
    """The plain asyncpg DSN of a PostgreSQL URL (for LISTEN connections), None for SQLite."""
    url = sa.engine.make_url(database_url)
    if not url.drivername.startswith("postgresql"):
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    pool_size: int = 20,
    max_overflow: int = 0,
    pool_timeout_s: float = 10.0,
    lock_timeout_ms: int = 3000,
) -> AsyncEngine:
    """Create the async engine with the per-backend settings Skybook relies on."""
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        # A fixed pool by default: requests beyond it queue for a connection (PostgreSQL runs best
        # with few), instead of opening and closing overflow connections all through a busy period.
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=False,
        connect_args={
            # A transaction that cannot get a row lock in time fails with "busy" instead of hanging.
            "server_settings": {
                "lock_timeout": str(lock_timeout_ms),
                "application_name": "skybook",
            },
        },
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    # pysqlite's implicit transaction handling defers BEGIN and cannot take a write lock up front;
    # we switch it off and emit BEGIN ourselves (the approach SQLAlchemy documents for SQLite).
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def insert_ignoring_conflicts(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT that silently skips rows violating a unique constraint, on either backend."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)

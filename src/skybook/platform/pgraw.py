"""PostgreSQL statements run by asyncpg directly: written once with SQLAlchemy Core, compiled once.

SQLAlchemy's execution layer (greenlet hand-off, cache lookup, parameter and result processing)
costs more CPU per statement than asyncpg spends on the statement itself: a hold ran at about
0.8 ms of API CPU through it and 0.3 ms with the same SQL sent by asyncpg (bench/hold_cpu.py).
The hot write paths therefore keep SQLAlchemy Core as the one place their SQL is *written*, compile
each statement once for PostgreSQL here, and send it with asyncpg, which prepares it once per
connection. Values still go through the column types' bind processors (JSON, UTC timestamps), so
what reaches the database is what SQLAlchemy would have sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql.compiler import SQLCompiler

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]

Processor = Callable[[Any], Any] | None


# SQLSTATE of skybook_refuse() (migration 0008): a one-statement write undid itself on purpose.
REFUSED_SQLSTATE = "SB409"


class StatementRefused(Exception):
    """A statement called ``skybook_refuse(reason)``: it rolled back, and ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionLost(ConnectionError):
    """The database connection of a raw unit of work broke (server gone, backend terminated).

    asyncpg reports it with several error classes depending on where the break is noticed; this one
    class lets the HTTP layer answer 503 ``database_unavailable`` for all of them.
    """


@dataclass(frozen=True, slots=True)
class RawStatement:
    """One statement as asyncpg runs it: SQL with ``$n`` placeholders and how to fill them."""

    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]
    processors: tuple[Processor, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """Positional values for ``params`` (by bind name), constants of the statement included."""
        out: list[Any] = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = params[name] if name in params else self.defaults[name]
            out.append(value if process is None or value is None else process(value))
        return out


# Keyed by the statement object's id, with the object kept beside it so an id reused after garbage
# collection never returns another statement's SQL. Statements are module-level constants: a few
# dozen entries for the life of the process.
_compiled: dict[int, tuple[sa.ClauseElement, RawStatement]] = {}


def compile_raw(stmt: sa.ClauseElement) -> RawStatement:
    """The statement compiled for asyncpg, once per statement object."""
    hit = _compiled.get(id(stmt))
    if hit is not None and hit[0] is stmt:
        return hit[1]
    compiled = stmt.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    if not isinstance(compiled, SQLCompiler):  # pragma: no cover - DDL is never run this way
        raise TypeError(f"not a SQL statement: {stmt!r}")
    names = tuple(compiled.positiontup or ())
    binds = compiled.binds
    processors = tuple(binds[n].type.bind_processor(_DIALECT) for n in names)
    raw = RawStatement(compiled.string, names, dict(compiled.params), processors)
    _compiled[id(stmt)] = (stmt, raw)
    return raw

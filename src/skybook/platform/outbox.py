"""Transactional outbox and consumer inbox tables.

Events are written to ``outbox`` in the same transaction as the state change that caused them,
so an event exists if and only if its change committed. Consumers record each handled event in
``inbox`` in the same transaction as their own effect, so a redelivery has no second effect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.platform.db import BigIntPK, JSONType, UTCDateTime, insert_ignoring_conflicts, metadata
from skybook.platform.events import Event

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("position", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("context", sa.String(32), nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("tenant_id", sa.String(64)),
    sa.Column("aggregate_id", sa.String(64), nullable=False),
    sa.Column("correlation_id", sa.String(64)),
    sa.Column("causation_id", sa.String(64)),
    sa.Column("data", JSONType, nullable=False),
    sa.Column("dispatched_at", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    # The relay tracks each broker on its own, so one broker being down does not hold up the other.
    sa.Column("stream_sent_at", UTCDateTime),
    sa.Column("tasks_sent_at", UTCDateTime),
)
sa.Index(
    "ix_outbox_pending",
    outbox.c.position,
    sqlite_where=outbox.c.dispatched_at.is_(None),
    postgresql_where=outbox.c.dispatched_at.is_(None),
)
sa.Index(
    "ix_outbox_stream_pending",
    outbox.c.position,
    sqlite_where=outbox.c.stream_sent_at.is_(None),
    postgresql_where=outbox.c.stream_sent_at.is_(None),
)
sa.Index(
    "ix_outbox_tasks_pending",
    outbox.c.position,
    sqlite_where=outbox.c.tasks_sent_at.is_(None),
    postgresql_where=outbox.c.tasks_sent_at.is_(None),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("consumer", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("handled_at", UTCDateTime, nullable=False),
)
# Retention deletes the oldest entries first (platform.retention, migration 0010).
sa.Index("ix_inbox_handled_at", inbox.c.handled_at)


dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("consumer", sa.String(64), nullable=False),
    sa.Column("event_id", sa.Uuid, nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("envelope", JSONType, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("failed_at", UTCDateTime, nullable=False),
    sa.Column("replayed_at", UTCDateTime),
)
"""Messages a worker gave up on after the allowed attempts, with the last error (``skybook dlq``)."""


def outbox_rows(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Rows for ``outbox`` from events, in the order they were raised."""
    return [
        {
            "event_id": e.id,
            "type": e.type,
            "version": e.version,
            "context": e.context,
            "occurred_at": e.occurred_at,
            "tenant_id": e.tenant_id,
            "aggregate_id": e.aggregate_id,
            "correlation_id": e.correlation_id,
            "causation_id": e.causation_id,
            "data": e.data,
        }
        for e in events
    ]


def event_from_row(row: sa.Row[Any]) -> Event:
    """Rebuild an event from its outbox row."""
    return Event(
        id=row.event_id,
        type=row.type,
        version=row.version,
        occurred_at=row.occurred_at,
        tenant_id=row.tenant_id,
        aggregate_id=row.aggregate_id,
        correlation_id=row.correlation_id,
        causation_id=row.causation_id,
        data=row.data,
    )


_CLAIM_MANY_PG = (
    postgresql.insert(inbox)
    .from_select(
        ["consumer", "event_id", "handled_at"],
        sa.select(
            sa.bindparam("consumer", type_=inbox.c.consumer.type),
            sa.func.unnest(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Uuid))),
            sa.bindparam("at", type_=inbox.c.handled_at.type),
        ),
    )
    .on_conflict_do_nothing()
    .returning(inbox.c.event_id)
)


class InboxTransaction(Protocol):
    """What claiming a batch needs of a unit of work (``skybook.platform.uow.UnitOfWork``)."""

    @property
    def dialect_name(self) -> str: ...

    @property
    def conn(self) -> AsyncConnection: ...

    async def all(self, stmt: sa.ClauseElement, params: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]: ...


async def claim_inbox_many(uow: InboxTransaction, *, consumer: str, events: Sequence[Event]) -> set[Any]:
    """Claim several events in one statement; returns the ids that were new (the others were handled)."""
    from skybook.platform.db import utcnow

    if not events:
        return set()
    now = utcnow()
    if uow.dialect_name == "postgresql":
        # The ids travel as one array: one statement whatever the batch size, compiled once,
        # instead of a multi-row VALUES compiled anew for every batch size seen. Through ``all``, a
        # raw unit of work (the workers') sends it with asyncpg.
        rows = await uow.all(_CLAIM_MANY_PG, {"consumer": consumer, "ids": [e.id for e in events], "at": now})
        return {row["event_id"] for row in rows}  # asyncpg's UUIDs hash and compare as uuid.UUID
    conn = uow.conn
    result = await conn.execute(
        insert_ignoring_conflicts(conn, inbox)
        .values([{"consumer": consumer, "event_id": e.id, "handled_at": now} for e in events])
        .returning(inbox.c.event_id)
    )
    return set(result.scalars())

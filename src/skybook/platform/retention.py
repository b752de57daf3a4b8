"""Retention of the event tables: delivered outbox events and consumers' inbox entries.

Without it both tables grow by every event for ever (the inbox by one row per consumer), and so do
their indexes, which every write to them pays for. Rules:

* An outbox event is deleted only once every delivery marker of the deployment is set (see
  :func:`delivery_markers`) and the last of them is older than the outbox retention. An event
  that was never delivered, or whose delivery was given up (``attempts`` used up in the embedded
  dispatcher), stays until someone looks at it.
* An inbox entry, a consumer's proof of having handled an event, is deleted after the inbox
  retention. It must outlive every redelivery of its event, or the redelivery would take effect
  again: settings keep it at least as long as the outbox retention, and operators keep it longer
  than the longest redelivery window of their brokers (a Kafka consumer group reset replays up to
  the topic's retention).

Both are deleted oldest first in batches, each batch its own short transaction, so pruning never
holds many row locks or a long snapshot; several workers pruning at once only repeat a few
deletes that find nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.platform.outbox import inbox, outbox
from skybook.platform.uow import UnitOfWork

UowFactory = Callable[[], UnitOfWork]

EMBEDDED_MARKERS = ("dispatched_at",)
"""Delivery marker of the in-process dispatcher; a relay marks each broker in a column of its own."""

PRUNED = Counter(
    "skybook_retention_deleted", "Outbox events and inbox entries deleted past their retention.", ["table"]
)


def delivery_markers(*, kafka: bool, rabbitmq: bool) -> tuple[str, ...]:
    """The outbox columns that mean "delivered" in a deployment: one per broker the relay publishes
    to, else the in-process dispatcher's."""
    markers = tuple(name for name, used in (("stream_sent_at", kafka), ("tasks_sent_at", rabbitmq)) if used)
    return markers or EMBEDDED_MARKERS


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each event table keeps its rows (None: for ever), and what "delivered" means."""

    outbox: timedelta | None
    inbox: timedelta | None
    markers: tuple[str, ...] = EMBEDDED_MARKERS
    batch_size: int = 2000

    @classmethod
    def of(cls, outbox_hours: float, inbox_hours: float, markers: Sequence[str]) -> Retention:
        """From the settings' hours, where 0 means keep for ever."""
        return cls(
            outbox=timedelta(hours=outbox_hours) if outbox_hours else None,
            inbox=timedelta(hours=inbox_hours) if inbox_hours else None,
            markers=tuple(markers),
        )


@dataclass(slots=True)
class Pruned:
    """Rows deleted by one round."""

    outbox: int = 0
    inbox: int = 0


async def prune(uow: UowFactory, retention: Retention, now: datetime) -> Pruned:
    """Delete what is past its retention at ``now``; each batch is a unit of work from ``uow``."""
    pruned = Pruned()
    if retention.outbox is not None:
        pruned.outbox = await prune_outbox(uow, retention.markers, now - retention.outbox, retention.batch_size)
    if retention.inbox is not None:
        pruned.inbox = await prune_inbox(uow, now - retention.inbox, retention.batch_size)
    return pruned


async def prune_outbox(uow: UowFactory, markers: Sequence[str], before: datetime, batch_size: int) -> int:
    """Delete outbox events delivered (every marker set) before ``before``; returns how many.

    The walk goes by position, oldest first, and ends at the first batch that reaches events that
    occurred after ``before``: positions follow commit order, so past that point nothing can have
    been delivered before the cut-off, and the rows within the retention are never scanned. Old
    events that stay (undelivered) are read again at every round; there are few of them.
    """
    columns = [outbox.c[m] for m in markers]
    read = (
        sa.select(outbox.c.position, outbox.c.occurred_at, *columns)
        .where(outbox.c.position > sa.bindparam("after"))
        .order_by(outbox.c.position)
        .limit(sa.bindparam("n"))
    )
    deleted, after = 0, -1
    while True:
        async with uow() as unit:
            rows = (await unit.conn.execute(read, {"after": after, "n": batch_size})).all()
            done = [r.position for r in rows if all(_before(r._mapping[m], before) for m in markers)]
            if done:
                deleted += await _delete_positions(unit.conn, done)
            await unit.commit()
        if len(rows) < batch_size or rows[-1].occurred_at >= before:
            break
        after = rows[-1].position
    if deleted:
        PRUNED.labels("outbox").inc(deleted)
    return deleted


async def prune_inbox(uow: UowFactory, before: datetime, batch_size: int) -> int:
    """Delete inbox entries of events handled before ``before``; returns how many."""
    deleted = 0
    while True:
        async with uow() as unit:
            count = (await unit.conn.execute(_DELETE_OLDEST_INBOX, {"before": before, "n": batch_size})).rowcount
            await unit.commit()
        deleted += count
        if count < batch_size:
            break
    if deleted:
        PRUNED.labels("inbox").inc(deleted)
    return deleted


def _before(value: datetime | None, cutoff: datetime) -> bool:
    """Whether a marker is set, and to a moment before ``cutoff``."""
    return value is not None and value < cutoff


# Built once, so SQLAlchemy finds their compiled form by identity.
_DELETE_OLDEST_INBOX = sa.delete(inbox).where(
    sa.tuple_(inbox.c.consumer, inbox.c.event_id).in_(
        sa.select(inbox.c.consumer, inbox.c.event_id)
        .where(inbox.c.handled_at < sa.bindparam("before", type_=inbox.c.handled_at.type))
        .order_by(inbox.c.handled_at)
        .limit(sa.bindparam("n"))
    )
)
# One array parameter: one statement, planned the same, whatever the batch holds.
_DELETE_POSITIONS_PG = sa.delete(outbox).where(
    outbox.c.position == sa.func.any(sa.bindparam("done", type_=postgresql.ARRAY(sa.BigInteger)))
)


async def _delete_positions(conn: AsyncConnection, positions: list[int]) -> int:
    if conn.dialect.name == "postgresql":
        return int((await conn.execute(_DELETE_POSITIONS_PG, {"done": positions})).rowcount)
    return int((await conn.execute(sa.delete(outbox).where(outbox.c.position.in_(positions)))).rowcount)

"""``skybook dlq``: list the messages workers gave up on, and deliver them again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from skybook.platform.clock import Clock
from skybook.platform.dispatcher import Consumer
from skybook.platform.messaging import Names, decode
from skybook.platform.messaging.worker import Handling
from skybook.platform.outbox import dead_letters
from skybook.platform.uow import UnitOfWork


async def list_dead_letters(uow: Callable[[], UnitOfWork], *, include_replayed: bool = False) -> list[dict[str, Any]]:
    """Dead letters, oldest first (only those not replayed yet unless asked)."""
    d = dead_letters.c
    query = sa.select(dead_letters).order_by(d.id)
    if not include_replayed:
        query = query.where(d.replayed_at.is_(None))
    async with uow() as u:
        rows = list(await u.conn.execute(query))
    return [
        {
            "id": r.id,
            "consumer": r.consumer,
            "event_id": str(r.event_id),
            "event_type": r.event_type,
            "attempts": r.attempts,
            "error": r.error,
            "failed_at": r.failed_at.isoformat(),
            "replayed_at": r.replayed_at.isoformat() if r.replayed_at else None,
        }
        for r in rows
    ]


async def replay_dead_letters(
    uow: Callable[[], UnitOfWork],
    clock: Clock,
    consumers: Sequence[Consumer],
    names: Names,
    *,
    ids: Sequence[int] | None,
    rabbitmq_url: str | None,
) -> list[dict[str, Any]]:
    """Deliver dead letters again: a task goes back onto its consumer's queue (a worker picks it up
    with a fresh attempt count); a stream event, which cannot be re-sent to one consumer group
    alone, is handled right here through the same inbox. Returns one outcome per letter."""
    d = dead_letters.c
    query = sa.select(dead_letters).where(d.replayed_at.is_(None)).order_by(d.id)
    if ids is not None:
        query = query.where(d.id.in_(ids))
    async with uow() as u:
        rows = list(await u.conn.execute(query))
    by_name = {c.name: c for c in consumers}
    outcomes: list[dict[str, Any]] = []
    connection = None
    try:
        for row in rows:
            consumer = by_name.get(row.consumer)
            if consumer is None:
                outcomes.append({"id": row.id, "outcome": "unknown consumer"})
                continue
            event = decode(_json(row.envelope))
            if consumer.transport == "tasks" and rabbitmq_url:
                import aio_pika

                from skybook.platform.messaging.rabbitmq import message

                if connection is None:
                    connection = await aio_pika.connect(rabbitmq_url, timeout=10)
                    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                await channel.default_exchange.publish(
                    message(event), routing_key=names.queue(consumer.name), mandatory=True
                )
                outcome = "requeued"
            else:
                error = await Handling(consumer, uow, clock).attempt(event)
                if error is not None:
                    async with uow() as u:
                        await u.conn.execute(
                            sa.update(dead_letters)
                            .where(d.id == row.id)
                            .values(error=f"{type(error).__name__}: {error}"[:4000], attempts=d.attempts + 1)
                        )
                        await u.commit()
                    outcomes.append({"id": row.id, "outcome": "failed again", "error": str(error)})
                    continue
                outcome = "handled"
            async with uow() as u:
                await u.conn.execute(sa.update(dead_letters).where(d.id == row.id).values(replayed_at=clock.now()))
                await u.commit()
            outcomes.append({"id": row.id, "outcome": outcome})
    finally:
        if connection is not None:
            await connection.close()
    return outcomes


def _json(value: Any) -> str:
    import json

    return json.dumps(value)

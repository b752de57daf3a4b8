"""In-process event dispatcher for the embedded default: outbox -> local consumers.

It reads the outbox in commit order after every commit (and on a timer as a fallback), hands
each event to its consumers, and marks it dispatched. Each consumer claims the event in the
``inbox`` table in the same transaction as its own effect, so a crash between the effect and
the mark-dispatched causes a redelivery without a second effect.

The handling itself (``handle_together``, ``handle_alone``: inbox claim, consumer, commit,
``skybook_event_propagation_seconds``) is shared with the workers of ``skybook worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
import structlog
from prometheus_client import Histogram

from skybook.platform.clock import Clock
from skybook.platform.dberrors import retry_can_help
from skybook.platform.events import Event
from skybook.platform.logs import handling_event
from skybook.platform.outbox import claim_inbox_many, event_from_row, outbox
from skybook.platform.uow import UnitOfWork

log = logging.getLogger("skybook.dispatcher")

Handler = Callable[[Event, UnitOfWork], Awaitable[None]]
BatchHandler = Callable[[Sequence[Event], UnitOfWork], Awaitable[None]]

EVENT_PROPAGATION = Histogram(
    "skybook_event_propagation_seconds",
    "Time from an event's occurred_at to the commit of a consumer's effect on it, first handling only "
    "(embedded dispatcher and workers; across hosts it includes their clock difference).",
    ["consumer"],
    buckets=(0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def _observe_propagation(consumer: str, events: Sequence[Event], now: datetime) -> None:
    """Record how long ``events``, just handled for the first time and committed, took to get here."""
    histogram = EVENT_PROPAGATION.labels(consumer)
    for event in events:
        histogram.observe(max(0.0, (now - event.occurred_at).total_seconds()))


@dataclass(frozen=True, slots=True)
class Consumer:
    """A named event handler subscribed to some event types."""

    name: str
    event_types: frozenset[str]
    handle: Handler
    transport: Literal["tasks", "stream"] = "tasks"
    """Where a scaled-out worker reads it: ``tasks`` = a RabbitMQ work queue of its own, ``stream`` = a Kafka
    consumer group on the context topics. The embedded dispatcher ignores it."""
    handle_many: BatchHandler | None = None
    """Optional: the effects of several events (in their order) in one call, e.g. one statement for
    a whole batch. Used when a batch is handled in one transaction; ``handle`` still handles an event
    alone (the one-by-one fallback that isolates a failing event, ``dlq replay``)."""


async def handle_claimed(consumer: Consumer, events: Sequence[Event], uow: UnitOfWork) -> list[Event]:
    """Claim ``events`` in the inbox and run the consumer on the new ones, in ``uow``'s transaction.

    One statement claims the whole batch; an event already in the inbox (a redelivery), or met
    twice in the batch, is not handled again. Returns the events that were handled. The caller
    commits, or rolls back everything when this raises (then it retries the events one by one).
    """
    claimed = await claim_inbox_many(uow, consumer=consumer.name, events=events)
    fresh: list[Event] = []
    for event in events:
        if event.id in claimed:
            claimed.discard(event.id)
            fresh.append(event)
    if not fresh:
        return fresh
    if consumer.handle_many is not None:
        with structlog.contextvars.bound_contextvars(consumer=consumer.name, events=len(fresh)):
            await consumer.handle_many(fresh, uow)
        return fresh
    for event in fresh:
        # Log records of the consumer (and the events it raises) carry the event's ids.
        with handling_event(event, consumer.name):
            await consumer.handle(event, uow)
    return fresh


async def handle_together(
    consumer: Consumer, events: Sequence[Event], uow: Callable[[], UnitOfWork], clock: Clock
) -> list[Event]:
    """``handle_claimed`` in a transaction of its own, committed; returns the events handled.

    Raises (everything rolled back) when the consumer fails on any of them. This and
    ``handle_alone`` are how the embedded dispatcher and the workers handle events, so both keep
    the same rules (inbox, propagation metric).
    """
    async with uow() as tx:
        fresh = await handle_claimed(consumer, events, tx)
        await tx.commit()
    _observe_propagation(consumer.name, fresh, clock.now())
    return fresh


async def handle_alone(consumer: Consumer, event: Event, uow: Callable[[], UnitOfWork], clock: Clock) -> bool:
    """One event in a transaction of its own (the fallback that isolates a failing event); False
    when it was a redelivery. Raises when the consumer fails."""
    async with uow() as tx:
        fresh = event.id in await claim_inbox_many(tx, consumer=consumer.name, events=[event])
        if fresh:
            with handling_event(event, consumer.name):
                await consumer.handle(event, tx)
        await tx.commit()
    if fresh:
        _observe_propagation(consumer.name, [event], clock.now())
    return fresh


class InProcessDispatcher:
    """Delivers outbox events to in-process consumers, at least once, effects exactly once."""

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        clock: Clock,
        consumers: Iterable[Consumer] = (),
        *,
        poll_interval: float = 1.0,
        batch_size: int = 200,
        max_attempts: int = 5,
        coalesce_seconds: float = 0.02,
    ) -> None:
        self._uow = uow_factory
        self._clock = clock
        self.consumers = list(consumers)
        self._poll = poll_interval
        self._batch = batch_size
        self._max_attempts = max_attempts
        self._coalesce = coalesce_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._running = False

    @property
    def batch_size(self) -> int:
        """Most events one ``drain()`` takes."""
        return self._batch

    @property
    def running(self) -> bool:
        """Whether ``run()`` is delivering in this process right now."""
        return self._running

    def wake(self) -> None:
        """Called after a commit that wrote events."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until stopped."""
        self._running = True
        try:
            await self._run()
        finally:
            self._running = False

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            if self._wake.is_set() and not self._stopping and self._coalesce > 0:
                # Let the commits of the next few milliseconds join this round: under load one
                # round per commit cost more transactions than the commits themselves.
                await asyncio.sleep(self._coalesce)
            self._wake.clear()
            try:
                # A partial batch means the outbox is drained; a commit since then sets the wake
                # flag again, so looking once more would only read an empty outbox.
                while await self.drain() >= self._batch:
                    pass
            except Exception:  # keep delivering; the failed batch is retried next round
                log.exception("dispatch round failed")

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def drain(self) -> int:
        """Deliver one batch of pending events; returns how many were taken."""
        o = outbox.c
        async with self._uow() as uow:
            rows = list(
                await uow.conn.execute(
                    sa.select(outbox)
                    .where(o.dispatched_at.is_(None), o.attempts < self._max_attempts)
                    .order_by(o.position)
                    .limit(self._batch)
                )
            )
        events = {row.position: event_from_row(row) for row in rows}
        errors: dict[int, str] = {}
        # Failures that may be the event's own use up one of its attempts; failures that were the
        # database's state (busy, away) are retried without using one (see retry_can_help).
        counted: set[int] = set()
        # One transaction per consumer for the whole batch (the inbox claims it in one statement):
        # a transaction per event and consumer cost several times the hold that raised the event.
        for consumer in self.consumers:
            mine = [(pos, e) for pos, e in events.items() if e.type in consumer.event_types]
            if not mine:
                continue
            try:
                await handle_together(consumer, [e for _, e in mine], self._uow, self._clock)
            except Exception:
                # One bad event must not hold back the others: retry them one by one, each in its
                # own transaction, and record the failures against their own rows.
                for pos, event in mine:
                    try:
                        await handle_alone(consumer, event, self._uow, self._clock)
                    except Exception as exc:
                        log.exception("consumer %s failed on event %s", consumer.name, event.id)
                        errors[pos] = f"{consumer.name}: {type(exc).__name__}: {exc}"[:2000]
                        if not retry_can_help(exc):
                            counted.add(pos)
        delivered = [pos for pos in events if pos not in errors]
        async with self._uow() as uow:
            if delivered:
                await uow.conn.execute(
                    sa.update(outbox)
                    .where(o.position.in_(delivered), o.dispatched_at.is_(None))
                    .values(dispatched_at=self._clock.now())
                )
            for pos, error in errors.items():
                used = int(pos in counted)
                await uow.conn.execute(
                    sa.update(outbox).where(o.position == pos).values(attempts=o.attempts + used, last_error=error)
                )
            await uow.commit()
        return len(rows)

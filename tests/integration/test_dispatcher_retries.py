"""The embedded dispatcher's retries: what uses up an event's attempts and what does not.

A consumer that fails because of the database's state (a lock held past the lock timeout, the
database away) has learnt nothing about the event: retrying it must not bring the event closer to
being given up. A consumer whose own code fails does use up an attempt, so a poison event stops
being retried after ``max_attempts``.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from skybook.bootstrap import Container
from skybook.platform.dispatcher import Consumer, InProcessDispatcher
from skybook.platform.errors import Busy
from skybook.platform.events import Event
from skybook.platform.outbox import inbox, outbox
from skybook.platform.uow import UnitOfWork

PING = "test.ping"


class Flaky:
    """Fails with ``error`` while ``failing`` is set."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.failing = True
        self.calls = 0

    async def __call__(self, event: Event, uow: UnitOfWork) -> None:
        self.calls += 1
        if self.failing:
            raise self.error


async def _emit(container: Container) -> Event:
    event = Event(type=PING, aggregate_id="agg-1", data={"seq": 0})
    async with container.uow() as uow:
        uow.emit(event)
        await uow.commit()
    return event


async def _row(container: Container, event: Event) -> tuple[int, datetime | None]:
    """The event's outbox row: attempts used, and when it was delivered (None: not yet)."""
    async with container.engine.connect() as conn:
        query = sa.select(outbox.c.attempts, outbox.c.dispatched_at).where(outbox.c.event_id == event.id)
        row = (await conn.execute(query)).one()
    return int(row.attempts), row.dispatched_at


async def _handled(container: Container, consumer: str) -> int:
    async with container.engine.connect() as conn:
        count = await conn.scalar(sa.select(sa.func.count()).select_from(inbox).where(inbox.c.consumer == consumer))
        return int(count or 0)


async def test_busy_failures_do_not_use_up_attempts_and_the_event_is_delivered_once_free(
    container: Container,
) -> None:
    flaky = Flaky(Busy("the inventory is busy; retry the request"))
    dispatcher = InProcessDispatcher(
        container.uow, container.clock, [Consumer("flaky", frozenset({PING}), flaky)], max_attempts=2
    )
    event = await _emit(container)

    for _ in range(5):  # more busy rounds than the event has attempts
        await dispatcher.drain()
        attempts, dispatched_at = await _row(container, event)
        assert (attempts, dispatched_at) == (0, None)

    assert flaky.calls >= 5

    flaky.failing = False  # the lock is gone: delivered, exactly once
    await dispatcher.drain()
    attempts, dispatched_at = await _row(container, event)
    assert attempts == 0 and dispatched_at is not None
    assert await _handled(container, "flaky") == 1


async def test_a_consumer_error_uses_up_attempts_and_the_event_is_then_left_alone(container: Container) -> None:
    flaky = Flaky(RuntimeError("bug in the consumer"))
    dispatcher = InProcessDispatcher(
        container.uow, container.clock, [Consumer("flaky", frozenset({PING}), flaky)], max_attempts=2
    )
    event = await _emit(container)

    for _ in range(2):
        await dispatcher.drain()
    assert await _row(container, event) == (2, None)
    calls = flaky.calls

    flaky.failing = False  # even once the consumer would succeed, the event is no longer offered
    for _ in range(2):
        await dispatcher.drain()
    assert await _row(container, event) == (2, None)
    assert flaky.calls == calls
    assert await _handled(container, "flaky") == 0

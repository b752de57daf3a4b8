"""The relay as leader on PostgreSQL (its own session, LISTEN/NOTIFY, marks that ride on the next read).

What a user relies on: every committed event is published once in normal operation, each writer's
events in the order it committed them, and every event ends up marked sent, also the last one
before the stream goes quiet. (Writers that do not serialise on a lock may commit out of their
positions' order, so only what one writer commits in turn has an order to keep; the domain's
transactions on one aggregate do serialise, which is the per-aggregate order of the relay.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from skybook.bootstrap import Container
from skybook.platform.db import listen_dsn
from skybook.platform.events import Event
from skybook.platform.messaging.relay import NOTIFY_CHANNEL, Relay, RelayOptions
from skybook.platform.outbox import outbox
from tests.conftest import Database

pytestmark = pytest.mark.postgres


@pytest.fixture
def database(postgres_database: Database) -> Database:
    return postgres_database


class Recording:
    """A publisher that confirms everything and records what it was given, batch by batch."""

    destination = "tasks"

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.published = asyncio.Condition()

    def wants(self, event_type: str) -> bool:
        return True

    async def publish(self, events: Sequence[Event]) -> int:
        async with self.published:
            self.batches.append(list(events))
            self.published.notify_all()
        return len(events)

    async def close(self) -> None:
        pass

    def ids(self) -> list[str]:
        return [str(e.id) for batch in self.batches for e in batch]

    async def reach(self, count: int) -> None:
        async with self.published:
            await asyncio.wait_for(self.published.wait_for(lambda: len(self.ids()) >= count), 20)


async def _emit(container: Container, n: int, start: int) -> list[str]:
    ids = []
    for i in range(start, start + n):
        event = Event(type="test.tick", aggregate_id=f"a{i % 3}", data={"n": i})
        async with container.uow() as uow:
            uow.emit(event)
            await uow.commit()
        ids.append(str(event.id))
    return ids


async def _unmarked(container: Container) -> int:
    async with container.engine.connect() as conn:
        count = await conn.scalar(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.tasks_sent_at.is_(None))
        )
    return int(count or 0)


async def test_the_leader_publishes_each_event_once_in_each_writers_order_and_marks_the_last_round_too(
    container: Container,
) -> None:
    publisher = Recording()
    relay = Relay(
        container.engine,
        container.clock,
        [publisher],
        RelayOptions(batch_size=7, poll_interval=5.0),
        listen_url=listen_dsn(container.settings.resolved_database_url),
    )
    running = asyncio.create_task(relay.run())
    try:
        one_by_one = await _emit(container, 20, 0)  # a round each, or a few together
        await publisher.reach(20)
        # Then three writers at once: rounds of several events, some full (batch_size 7).
        parts = await asyncio.gather(*(_emit(container, 10, 100 * k) for k in range(1, 4)))
        await publisher.reach(50)
        # Nothing follows the last round: its marks are written alone, well before the poll interval.
        for _ in range(40):
            if await _unmarked(container) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _unmarked(container) == 0
    finally:
        relay.stop()
        await asyncio.wait_for(running, 10)
    published = publisher.ids()
    written = one_by_one + [event_id for part in parts for event_id in part]
    assert sorted(published) == sorted(written) and len(published) == len(set(published))  # each once
    assert published[:20] == one_by_one
    for part in parts:
        mine = set(part)
        assert [event_id for event_id in published if event_id in mine] == part


async def test_while_events_flow_writers_stop_notifying_and_a_quiet_outbox_is_woken_again(
    container: Container,
) -> None:
    import asyncpg

    dsn = listen_dsn(container.settings.resolved_database_url)
    heard: list[str] = []
    listener = await asyncpg.connect(dsn)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *_: heard.append("notify"))
    publisher = Recording()
    # A long linger and a poll interval far beyond the test, so that nothing else explains what is seen.
    relay = Relay(
        container.engine, container.clock, [publisher], RelayOptions(poll_interval=30.0, linger=0.05), listen_url=dsn
    )
    running = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.5)  # the leader found nothing and waits for a NOTIFY
        flow = []
        for i in range(100):  # 100 commits over at least a second
            flow += await _emit(container, 1, i)
            await asyncio.sleep(0.01)
        await publisher.reach(100)
        # The first commits woke the leader; from its second round on it polled and writers stayed quiet.
        during_flow = len(heard)
        assert 1 <= during_flow <= 20, during_flow

        await asyncio.sleep(0.5)  # quiet again: the leader takes the lock back and waits
        late = await _emit(container, 1, 1000)
        await publisher.reach(101)  # within 20 s, not the 30 s poll interval
        await asyncio.sleep(0.1)  # let the listener hear what the last commit sent
        assert len(heard) > during_flow  # that commit notified
    finally:
        relay.stop()
        await asyncio.wait_for(running, 10)
        await listener.close()
    assert publisher.ids() == flow + late  # one writer: each once, in its order

"""Retention of the event tables: what is delivered and old goes, everything else stays.

The outbox would otherwise grow by every event for ever, and the inbox by one row per consumer
and event. Deleting too much is the danger: an undelivered event must never go (it would be lost),
nor one that a broker has not had yet, and an inbox entry must stay as long as its event could be
redelivered (``settings`` keeps it at least as long as the outbox).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from skybook.bootstrap import Container
from skybook.ops.audit import audit_since, report, run_audit
from skybook.periodic import prune_once
from skybook.platform.clock import FakeClock
from skybook.platform.events import Event
from skybook.platform.outbox import inbox, outbox
from skybook.platform.retention import EMBEDDED_MARKERS, delivery_markers, prune_inbox, prune_outbox
from tests.conftest import Database, Network
from tests.integration.test_audit import _history, _subs

TICK = "test.tick"
WEEK = timedelta(days=7)


async def _emit(container: Container, count: int, at: datetime | None = None) -> list[uuid.UUID]:
    at = at or container.clock.now()
    events = [Event(type=TICK, aggregate_id=f"agg-{i}", data={"i": i}, occurred_at=at) for i in range(count)]
    async with container.uow() as uow:
        for event in events:
            uow.emit(event)
        await uow.commit()
    return [e.id for e in events]


async def _drain(container: Container) -> None:
    while await container.dispatcher.drain():
        pass


async def _in_outbox(container: Container) -> set[uuid.UUID]:
    async with container.engine.connect() as conn:
        return set((await conn.execute(sa.select(outbox.c.event_id))).scalars())


async def _give_up(container: Container, ids: list[uuid.UUID]) -> None:
    """What the dispatcher does to an event whose attempts ran out: it stays, undelivered."""
    async with container.engine.begin() as conn:
        await conn.execute(
            sa.update(outbox).where(outbox.c.event_id.in_(ids)).values(attempts=99, last_error="consumer failed")
        )


async def test_delivered_events_go_after_the_retention_and_undelivered_ones_stay(
    container: Container, clock: FakeClock
) -> None:
    await _emit(container, 3)  # delivered now, a week before the round
    await _drain(container)
    given_up = await _emit(container, 1)
    await _give_up(container, given_up)
    clock.advance(WEEK + timedelta(minutes=1))
    recent = await _emit(container, 2)
    await _drain(container)
    waiting = await _emit(container, 1)  # committed, not delivered yet

    pruned = await prune_once(container)

    assert pruned.outbox == 3
    assert await _in_outbox(container) == {*given_up, *recent, *waiting}
    # A second round finds nothing more to delete.
    assert (await prune_once(container)).outbox == 0


async def test_the_outbox_walk_deletes_across_batches_and_skips_what_must_stay(container: Container) -> None:
    now = container.clock.now()
    delivered_old = now - timedelta(days=10)
    ids = await _emit(container, 6, at=delivered_old) + await _emit(container, 3)
    # Positions in order: five delivered long ago with an undelivered one among them, three recent.
    marks: list[datetime | None] = [delivered_old] * 2 + [None] + [delivered_old] * 3 + [now] * 3
    async with container.engine.begin() as conn:
        for event_id, mark in zip(ids, marks, strict=True):
            await conn.execute(sa.update(outbox).where(outbox.c.event_id == event_id).values(dispatched_at=mark))

    deleted = await prune_outbox(container.uow, EMBEDDED_MARKERS, now - WEEK, batch_size=2)

    assert deleted == 5
    assert await _in_outbox(container) == {ids[2], *ids[6:]}


async def test_an_event_stays_until_every_broker_of_the_deployment_has_it(container: Container) -> None:
    now = container.clock.now()
    long_ago = now - timedelta(days=10)
    both, rabbit_only = await _emit(container, 2, at=long_ago)
    async with container.engine.begin() as conn:
        await conn.execute(
            sa.update(outbox).where(outbox.c.event_id == both).values(stream_sent_at=long_ago, tasks_sent_at=long_ago)
        )
        await conn.execute(sa.update(outbox).where(outbox.c.event_id == rabbit_only).values(tasks_sent_at=long_ago))
    with_kafka = delivery_markers(kafka=True, rabbitmq=True)
    assert with_kafka == ("stream_sent_at", "tasks_sent_at")

    assert await prune_outbox(container.uow, with_kafka, now - WEEK, batch_size=100) == 1
    assert await _in_outbox(container) == {rabbit_only}
    # A deployment on RabbitMQ alone never sets the Kafka marker: its events go all the same.
    assert await prune_outbox(container.uow, delivery_markers(kafka=False, rabbitmq=True), now - WEEK, 100) == 1
    assert await _in_outbox(container) == set()


async def test_inbox_entries_go_after_the_inbox_retention(container: Container, clock: FakeClock) -> None:
    now = clock.now()
    ages = [timedelta(days=d) for d in (30, 12, 9, 9, 8.5)] + [timedelta(days=7), timedelta(hours=1)]
    async with container.engine.begin() as conn:
        await conn.execute(
            sa.insert(inbox),
            [{"consumer": "ticketing", "event_id": uuid.uuid4(), "handled_at": now - age} for age in ages],
        )
    assert await prune_inbox(container.uow, now - timedelta(days=8), batch_size=2) == 5
    async with container.engine.connect() as conn:
        kept = sorted((await conn.execute(sa.select(inbox.c.handled_at))).scalars())
    assert kept == [now - timedelta(days=7), now - timedelta(hours=1)]

    # The settings' round: 192 hours by default, so nothing more goes today...
    assert (await prune_once(container)).inbox == 0
    # ...and both remaining entries eight days later.
    clock.advance(timedelta(days=8, hours=1))
    assert (await prune_once(container)).inbox == 2


async def test_the_audit_still_passes_after_retention_deleted_old_events(
    network: Network, container: Container, clock: FakeClock
) -> None:
    await _history(network, container)
    clock.advance(WEEK + timedelta(minutes=30))
    pruned = await prune_once(container)
    assert pruned.outbox > 0
    assert pruned.inbox == 0  # the inbox outlives the outbox

    since = audit_since(clock.now(), WEEK)
    doc = report(await run_audit(container.engine, _subs(container), since=since))
    assert doc["consistency"] == 1.0, doc
    # Without the window the entries of deleted events would look like effects of unknown events.
    unwindowed = report(await run_audit(container.engine, _subs(container)))
    failed = [c["name"] for c in unwindowed["checks"] if not c["passed"]]
    assert failed == ["consumer_effects_once"]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_the_prune_command_deletes_by_the_settings_and_prints_the_counts(
    container: Container, database: Database, tmp_path: Path
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=30)
    await _emit(container, 4, at=long_ago)
    async with container.engine.begin() as conn:
        await conn.execute(sa.update(outbox).values(dispatched_at=long_ago))
    kept = await _emit(container, 1)  # not delivered
    env = {
        **os.environ,
        "SKYBOOK_DATABASE_URL": database.url,
        "SKYBOOK_DATA_DIR": str(tmp_path),
        "SKYBOOK_OUTBOX_RETENTION_HOURS": "24",
        "SKYBOOK_INBOX_RETENTION_HOURS": "24",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "skybook.cli", "prune"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"outbox_deleted": 4, "inbox_deleted": 0}
    assert await _in_outbox(container) == set(kept)

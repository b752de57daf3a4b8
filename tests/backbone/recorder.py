"""Test consumers for the backbone tests, loaded by relay and worker through SKYBOOK_EXTRA_CONSUMERS.

Each records its effect as a row in ``backbone_effects`` inside the consumer's transaction, with
no unique constraint, so a second effect of one event would show as a second row. An event with
``data.poison`` fails until its id is listed in ``backbone_cured``; ``data.sleep`` slows it down;
``data.locked`` first takes the row lock on ``backbone_gate``, so a test holding that lock makes
the consumer fail with ``Busy`` (lock timeout) until it lets go.
"""

from __future__ import annotations

import asyncio
from functools import partial

import sqlalchemy as sa

from skybook.platform.dispatcher import Consumer
from skybook.platform.events import Event
from skybook.platform.uow import UnitOfWork

EVENT_TYPE = "test.ping"
TASKS = "bb-tasks"
STREAM = "bb-stream"

DDL = (
    "CREATE TABLE IF NOT EXISTS backbone_effects (id bigserial PRIMARY KEY, consumer text NOT NULL, "
    "event_id text NOT NULL, aggregate_id text NOT NULL, seq integer NOT NULL)",
    "CREATE TABLE IF NOT EXISTS backbone_cured (event_id text PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS backbone_gate (id integer PRIMARY KEY)",
    "INSERT INTO backbone_gate VALUES (1) ON CONFLICT DO NOTHING",
)


async def record(consumer: str, event: Event, uow: UnitOfWork) -> None:
    if event.data.get("poison"):
        cured = await uow.conn.scalar(
            sa.text("SELECT count(*) FROM backbone_cured WHERE event_id = :e"), {"e": str(event.id)}
        )
        if not cured:
            raise RuntimeError(f"poison message {event.id}")
    if event.data.get("locked"):
        await uow.conn.execute(sa.text("SELECT id FROM backbone_gate WHERE id = 1 FOR UPDATE"))
    if event.data.get("sleep"):
        await asyncio.sleep(float(event.data["sleep"]))
    await uow.conn.execute(
        sa.text("INSERT INTO backbone_effects (consumer, event_id, aggregate_id, seq) VALUES (:c, :e, :a, :s)"),
        {"c": consumer, "e": str(event.id), "a": event.aggregate_id, "s": int(event.data["seq"])},
    )


def consumers() -> list[Consumer]:
    types = frozenset({EVENT_TYPE})
    return [
        Consumer(TASKS, types, partial(record, TASKS), "tasks"),
        Consumer(STREAM, types, partial(record, STREAM), "stream"),
    ]

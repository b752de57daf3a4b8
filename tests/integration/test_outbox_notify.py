"""The outbox trigger wakes a waiting relay, and only a waiting relay (PostgreSQL only).

PostgreSQL commits notifying transactions one at a time, so writers must not NOTIFY when nobody
waits: not while the relay is busy, not when no relay runs at all. What a user relies on: an
event committed while the relay waits wakes it, and an event committed while nobody waits costs
the writer no notification.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg  # type: ignore[import-untyped]
import pytest

from skybook.platform.db import listen_dsn
from skybook.platform.messaging.relay import NOTIFY_CHANNEL, RELAY_IDLE_LOCK_KEY
from tests.conftest import Database

pytestmark = pytest.mark.postgres


@pytest.fixture
def database(postgres_database: Database) -> Database:
    return postgres_database


@pytest.fixture
async def connect(database: Database) -> AsyncIterator[object]:
    opened: list[asyncpg.Connection] = []

    async def open_one() -> asyncpg.Connection:
        dsn = listen_dsn(database.url)
        assert dsn is not None
        conn = await asyncpg.connect(dsn, timeout=10)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        await conn.close()


async def _write_event(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO outbox (event_id, type, version, context, occurred_at, aggregate_id, data)"
            " VALUES ($1, 'test.ping', 1, 'test', $2, 'agg-1', '{}')",
            uuid.uuid4(),
            datetime.now(UTC),
        )


async def _heard(listener: asyncpg.Connection, write: asyncpg.Connection) -> bool:
    """Whether one committed outbox write reaches a LISTEN on the relay's channel."""
    heard = asyncio.Event()
    callback = lambda *_: heard.set()  # noqa: E731
    await listener.add_listener(NOTIFY_CHANNEL, callback)
    try:
        await _write_event(write)
        # A round trip on the listening connection: a notification committed before it was sent
        # has arrived by the time it returns (the server sends notifications between messages).
        await listener.fetchval("SELECT 1")
        await asyncio.sleep(0.05)
        return heard.is_set()
    finally:
        await listener.remove_listener(NOTIFY_CHANNEL, callback)


async def test_a_commit_notifies_only_while_the_relay_holds_its_idle_lock(connect: object) -> None:
    listener, writer, relay = await connect(), await connect(), await connect()  # type: ignore[operator]

    assert not await _heard(listener, writer)  # no relay waits: no NOTIFY

    await relay.execute("SELECT pg_advisory_lock($1)", RELAY_IDLE_LOCK_KEY)  # the relay waits
    assert await _heard(listener, writer)

    await relay.execute("SELECT pg_advisory_unlock($1)", RELAY_IDLE_LOCK_KEY)  # busy again
    assert not await _heard(listener, writer)


async def test_the_relay_taking_its_idle_lock_waits_for_writers_that_skipped_their_notify(connect: object) -> None:
    writer, relay = await connect(), await connect()  # type: ignore[operator]
    tx = writer.transaction()
    await tx.start()
    await writer.execute(
        "INSERT INTO outbox (event_id, type, version, context, occurred_at, aggregate_id, data)"
        " VALUES ($1, 'test.ping', 1, 'test', $2, 'agg-1', '{}')",
        uuid.uuid4(),
        datetime.now(UTC),
    )  # the trigger found no relay waiting and took the key shared: no NOTIFY from this writer

    # Until that writer commits, the relay cannot start waiting, so its read after taking the
    # lock sees the row that was never announced.
    assert not await relay.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_IDLE_LOCK_KEY)
    await tx.commit()
    assert await relay.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_IDLE_LOCK_KEY)

"""Cross-process wake-ups: a NOTIFY sent in a transaction reaches the waiters of its key at commit."""

from __future__ import annotations

import asyncio
import uuid

from skybook.booking.repository import TICKETED_CHANNEL, announce_ticketed
from skybook.platform.db import create_engine, listen_dsn
from skybook.platform.signals import PgSignals
from tests.conftest import Database


async def _listening(signals: PgSignals) -> None:
    # The listener connects on first use; give it the moment it needs (bounded).
    for _ in range(200):
        if signals.live:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the listener never connected")


async def test_an_announcement_wakes_its_key_only_and_only_once_committed(postgres_database: Database) -> None:
    dsn = listen_dsn(postgres_database.url)
    assert dsn is not None
    signals = PgSignals(dsn, TICKETED_CHANNEL)
    engine = create_engine(postgres_database.url, pool_size=1)
    order, other = uuid.uuid4(), uuid.uuid4()
    try:
        with signals.listen(str(order)) as mine, signals.listen(str(other)) as theirs:
            await _listening(signals)
            async with engine.connect() as conn:
                await conn.begin()
                await announce_ticketed(conn, order)
                assert not await mine.wait(0.3)  # not before the commit
                await conn.commit()
            assert await mine.wait(30)
            assert not await theirs.wait(0.3)
    finally:
        await signals.close()
        await engine.dispose()


async def test_a_rolled_back_announcement_never_arrives(postgres_database: Database) -> None:
    dsn = listen_dsn(postgres_database.url)
    assert dsn is not None
    signals = PgSignals(dsn, TICKETED_CHANNEL)
    engine = create_engine(postgres_database.url, pool_size=1)
    order = uuid.uuid4()
    try:
        with signals.listen(str(order)) as mine:
            await _listening(signals)
            async with engine.connect() as conn:
                await conn.begin()
                await announce_ticketed(conn, order)
                await conn.rollback()
            assert not await mine.wait(0.5)
    finally:
        await signals.close()
        await engine.dispose()


async def test_waiters_fall_back_to_polling_when_the_database_refuses_the_listener() -> None:
    signals = PgSignals("postgresql://root@127.0.0.1:1/nowhere", TICKETED_CHANNEL)  # nothing listens there
    try:
        with signals.listen("k") as sub:
            assert not await sub.wait(0.2)  # a plain timeout, no error
        await asyncio.sleep(0.1)
        assert not signals.live
    finally:
        await signals.close()

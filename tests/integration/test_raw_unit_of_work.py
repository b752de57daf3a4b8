"""The raw unit of work (PostgreSQL only): holds run on asyncpg directly on PostgreSQL, and must stay as safe as before.

What a user relies on: a hold is all-or-nothing, a lost database connection is a clear 503 and
not a poisoned pool, a locked counter is a retryable ``busy``, and the values written are the ones
SQLAlchemy would have written (JSON, UTC timestamps).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from skybook import inventory
from skybook.booking import handlers
from skybook.booking.commands import HoldSeats, SegmentChoice
from skybook.booking.model import PartySize
from skybook.booking.tables import orders
from skybook.bootstrap import Container, bootstrap
from skybook.inventory.tables import booking_classes, flight_cabins
from skybook.platform.dberrors import database_unavailable
from skybook.platform.errors import Busy
from skybook.platform.events import Event
from skybook.platform.outbox import inbox, outbox
from skybook.platform.pgraw import compile_raw
from tests.conftest import Database, Network

pytestmark = pytest.mark.postgres


def test_a_statement_is_compiled_once_with_its_constants_and_its_column_types_applied() -> None:
    stmt = sa.insert(outbox).values(
        event_id=sa.bindparam("event_id"),
        type="hold.created",  # a constant of the statement, not a parameter of the call
        version=1,
        context="booking",
        occurred_at=sa.bindparam("at"),
        aggregate_id=sa.bindparam("agg"),
        data=sa.bindparam("data"),
    )
    raw = compile_raw(stmt)
    assert compile_raw(stmt) is raw
    assert "$1" in raw.sql and ":" not in raw.sql.replace("::", "")

    event_id = uuid.uuid4()
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    args = dict(
        zip(raw.names, raw.args({"event_id": event_id, "at": at, "agg": "A1", "data": {"seats": 2}}), strict=True)
    )
    assert "hold.created" in args.values() and "booking" in args.values()
    # The JSON column's bind processing ran: asyncpg receives the document as text.
    assert json.loads(args["data"]) == {"seats": 2}
    assert args["event_id"] == event_id


@pytest.fixture
def database(postgres_database: Database) -> Database:
    """PostgreSQL only: the raw unit of work does not exist on SQLite (it runs the SQLAlchemy one)."""
    return postgres_database


@pytest.fixture
async def one_connection(container: Container) -> AsyncIterator[Container]:
    """A second container on the same database whose pool holds a single connection, so a connection
    that went bad would be lent again to the very next unit of work; lock waits end after 200 ms."""
    settings = container.settings.model_copy(
        update={"database_pool_size": 1, "database_lock_timeout_ms": 200, "run_workers": False}
    )
    c = bootstrap(settings)
    yield c
    await c.close()


async def _counts(c: Container, flight_id: str) -> tuple[int, int]:
    async with c.engine.connect() as conn:
        held_class = await conn.scalar(
            sa.select(sa.func.sum(booking_classes.c.held)).where(booking_classes.c.flight_id == uuid.UUID(flight_id))
        )
        held_cabin = await conn.scalar(
            sa.select(sa.func.sum(flight_cabins.c.held)).where(flight_cabins.c.flight_id == uuid.UUID(flight_id))
        )
    return int(held_class or 0), int(held_cabin or 0)


async def _take(c: Container, uow_flight: str, seats: int = 2) -> None:
    async with c.uow(raw=True) as uow:
        await inventory.take_seats(
            uow, flight_id=uuid.UUID(uow_flight), booking_class="M", seats=seats, now=c.clock.now()
        )
        raise RuntimeError("the caller fails after taking seats, before committing")


async def test_seats_taken_in_a_raw_unit_of_work_that_is_left_without_commit_are_given_back(
    network: Network, one_connection: Container
) -> None:
    flight = await network.flight()
    before = await _counts(one_connection, flight["id"])
    with pytest.raises(RuntimeError, match="before committing"):
        await _take(one_connection, flight["id"])
    assert await _counts(one_connection, flight["id"]) == before

    async with one_connection.uow(raw=True) as uow:
        with pytest.raises(RuntimeError, match=r"uow\.one"):
            _ = uow.conn  # a raw unit of work cannot mix in SQLAlchemy statements


async def test_a_connection_lost_in_the_middle_of_a_hold_is_reported_as_unavailable_and_not_lent_again(
    network: Network, one_connection: Container, container: Container
) -> None:
    flight = await network.flight()
    before = await _counts(one_connection, flight["id"])

    async def lose_the_connection_before_commit() -> None:
        async with one_connection.uow(raw=True) as uow:
            await inventory.take_seats(
                uow, flight_id=uuid.UUID(flight["id"]), booking_class="M", seats=3, now=one_connection.clock.now()
            )
            async with container.engine.connect() as admin:
                pid = uow._pg.get_server_pid()
                await admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await uow.commit()

    with pytest.raises(Exception) as lost:  # noqa: PT011 - which of asyncpg's errors is not the point
        await lose_the_connection_before_commit()
    assert database_unavailable(lost.value), repr(lost.value)
    # Nothing of the lost transaction stayed, and the pool's only connection is a fresh one.
    assert await _counts(one_connection, flight["id"]) == before
    held = await handlers.hold_seats(
        HoldSeats((SegmentChoice(uuid.UUID(flight["id"]), "M"),), PartySize(adults=1)), one_connection
    )
    assert held.total_amount > 0
    assert await _counts(one_connection, flight["id"]) == (before[0] + 1, before[1] + 1)


async def test_a_counter_locked_by_another_transaction_makes_the_hold_a_retryable_busy(
    network: Network, one_connection: Container, container: Container
) -> None:
    flight = await network.flight()
    async with container.engine.connect() as locker:
        await locker.execute(
            sa.select(booking_classes.c.id)
            .where(booking_classes.c.flight_id == uuid.UUID(flight["id"]), booking_classes.c.code == "M")
            .with_for_update()
        )
        with pytest.raises(Busy):
            async with one_connection.uow(raw=True) as uow:
                await inventory.take_seats(
                    uow, flight_id=uuid.UUID(flight["id"]), booking_class="M", seats=1, now=one_connection.clock.now()
                )
        await locker.rollback()


async def test_a_one_segment_hold_whose_cabin_is_full_is_sold_out_and_leaves_the_class_count_alone(
    network: Network, container: Container
) -> None:
    # Class M still has room (limit 30), but every seat of its cabin (Y, 60) is taken by other
    # classes: the one statement raises the class's count, finds no cabin room and undoes itself.
    flight = await network.flight()
    fid = uuid.UUID(flight["id"])
    async with container.engine.begin() as conn:
        await conn.execute(
            flight_cabins.update()
            .where(flight_cabins.c.flight_id == fid, flight_cabins.c.cabin_code == "Y")
            .values(held=flight_cabins.c.capacity)
        )
    try:
        before = await _counts(container, flight["id"])
        async with container.engine.connect() as conn:
            events_before = await conn.scalar(sa.select(sa.func.count()).select_from(outbox))
        answer = await network.hold(flight["id"], "M", adults=2)
        assert answer.status_code == 409, answer.text
        assert answer.json()["code"] == "sold_out"
        assert "cabin" in answer.json()["detail"]
        assert await _counts(container, flight["id"]) == before
        async with container.engine.connect() as conn:
            assert await conn.scalar(sa.select(sa.func.count()).select_from(outbox)) == events_before
    finally:  # the suite's invariant check compares counts with orders
        async with container.engine.begin() as conn:
            await conn.execute(
                flight_cabins.update()
                .where(flight_cabins.c.flight_id == fid, flight_cabins.c.cabin_code == "Y")
                .values(held=0)
            )


@pytest.mark.parametrize(("adults", "children", "infants"), [(1, 0, 0), (2, 1, 1), (2, 3, 2), (9, 0, 0)])
async def test_a_one_segment_hold_prices_the_party_as_the_fare_rules_do_in_its_order_and_its_event(
    network: Network, container: Container, adults: int, children: int, infants: int
) -> None:
    fares = [{"booking_class": "Y", "cabin": "Y", "amount": 30333, "currency": "EUR", "seat_limit": 60}]
    flight = await network.flight(fares=fares)
    answer = await network.hold(flight["id"], "Y", adults=adults, children=children, infants=infants)
    assert answer.status_code == 201, answer.text
    expected = PartySize(adults, children, infants).price(30333)  # odd fare: the rounding shows
    assert answer.json()["total"] == {"amount": expected, "currency": "EUR"}
    async with container.engine.connect() as conn:
        stored = await conn.scalar(
            sa.select(orders.c.total_amount).where(orders.c.id == uuid.UUID(answer.json()["id"]))
        )
        created = (
            await conn.execute(sa.select(outbox.c.data, outbox.c.context).where(outbox.c.type == "hold.created"))
        ).one()
    assert stored == expected
    assert created.context == "booking"
    assert created.data == {
        "order_id": answer.json()["id"],
        "expires_at": created.data["expires_at"],
        "seats": adults + children,
        "segments": [{"flight_id": flight["id"], "booking_class": "Y"}],
        "total": {"amount": expected, "currency": "EUR"},
    }


async def test_a_hold_cancelled_while_its_statement_waits_leaves_no_connection_behind_in_that_state(
    network: Network, one_connection: Container, container: Container
) -> None:
    # The statement waits on a lock the test holds; the request is cancelled meanwhile (a client
    # that went away, a shutdown). Its connection must not be lent again mid-statement: the next
    # hold on the single-connection pool must commit, and be seen committed from elsewhere.
    flight = await network.flight()
    fid = uuid.UUID(flight["id"])
    hold = HoldSeats((SegmentChoice(fid, "M"),), PartySize(adults=1))
    async with container.engine.connect() as locker:
        await locker.execute(
            sa.select(booking_classes.c.id)
            .where(booking_classes.c.flight_id == fid, booking_classes.c.code == "M")
            .with_for_update()
        )
        waiting = asyncio.create_task(handlers.hold_seats(hold, one_connection))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await locker.rollback()

    held = await handlers.hold_seats(hold, one_connection)
    async with container.engine.connect() as conn:
        committed = await conn.scalar(sa.select(sa.func.count()).select_from(orders).where(orders.c.id == held.id))
    assert committed == 1


# --- The workers' mixed unit of work: asyncpg's transaction, SQLAlchemy's statements inside it ---

_INBOX_ROW = sa.insert(inbox).values(
    consumer=sa.bindparam("consumer"), event_id=sa.bindparam("event_id"), handled_at=sa.bindparam("at")
)


async def _inbox_of(c: Container, consumer: str) -> int:
    async with c.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(inbox).where(inbox.c.consumer == consumer)))


async def test_a_mixed_unit_of_work_keeps_or_undoes_its_sqlalchemy_and_its_asyncpg_statements_together(
    one_connection: Container,
) -> None:
    consumer = f"mixed-{uuid.uuid4().hex[:8]}"

    async def write_both(commit: bool) -> None:
        async with one_connection.consumer_uow() as uow:
            await uow.execute(_INBOX_ROW, {"consumer": consumer, "event_id": uuid.uuid4(), "at": datetime.now(UTC)})
            await uow.conn.execute(
                _INBOX_ROW, {"consumer": consumer, "event_id": uuid.uuid4(), "at": datetime.now(UTC)}
            )
            uow.emit(Event(type="x.mixed", aggregate_id=consumer, data={}))
            if commit:
                await uow.commit()

    await write_both(commit=False)
    assert await _inbox_of(one_connection, consumer) == 0  # SQLAlchemy's row went with asyncpg's
    await write_both(commit=True)
    assert await _inbox_of(one_connection, consumer) == 2
    async with one_connection.engine.connect() as conn:
        assert (
            await conn.scalar(sa.select(sa.func.count()).select_from(outbox).where(outbox.c.aggregate_id == consumer))
            == 1
        )


async def test_a_failed_sqlalchemy_statement_in_a_mixed_unit_of_work_leaves_the_pooled_connection_as_lent(
    one_connection: Container,
) -> None:
    consumer = f"mixed-{uuid.uuid4().hex[:8]}"

    async def write_one_key_twice() -> None:
        async with one_connection.consumer_uow() as uow:
            await uow.execute(_INBOX_ROW, {"consumer": consumer, "event_id": uuid.uuid4(), "at": datetime.now(UTC)})
            params = {"consumer": consumer, "event_id": uuid.uuid4(), "at": datetime.now(UTC)}
            await uow.conn.execute(_INBOX_ROW, params)
            await uow.conn.execute(_INBOX_ROW, params)

    with pytest.raises(sa.exc.IntegrityError):
        await write_one_key_twice()
    assert await _inbox_of(one_connection, consumer) == 0

    # The pool's only connection came back out of autocommit and outside any transaction: an
    # ordinary unit of work on it still undoes what it does not commit.
    async with one_connection.uow() as uow:
        await uow.conn.execute(_INBOX_ROW, {"consumer": consumer, "event_id": uuid.uuid4(), "at": datetime.now(UTC)})
    assert await _inbox_of(one_connection, consumer) == 0
    async with one_connection.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert raw.dbapi_connection.autocommit is False
        assert not raw.driver_connection.is_in_transaction()

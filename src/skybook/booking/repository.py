"""Persistence of the booking context (SQLAlchemy Core)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook import inventory
from skybook.booking.model import CHILD_FARE_PERCENT, INFANT_FARE_PERCENT, PartySize, new_record_locator
from skybook.booking.tables import (
    order_segments,
    orders,
    passengers,
    seat_assignments,
    ticket_serials,
)
from skybook.inventory import flights
from skybook.platform.db import insert_ignoring_conflicts
from skybook.platform.errors import Conflict, NotFound
from skybook.platform.outbox import outbox
from skybook.platform.security import Principal
from skybook.platform.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class OrderRow:
    """The order row as the handlers need it."""

    id: uuid.UUID
    status: str
    record_locator: str | None
    party: PartySize
    total_amount: int
    currency: str
    expires_at: datetime
    contact_email: str | None
    ticketed_at: datetime | None
    tenant_id: uuid.UUID | None = None

    @property
    def tenant(self) -> str | None:
        """The owning tenant as events carry it (tenant webhooks route on it)."""
        return str(self.tenant_id) if self.tenant_id is not None else None


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """A booked segment with the counter ids that release and sell need."""

    segment_no: int
    flight_id: uuid.UUID
    booking_class: str
    booking_class_id: uuid.UUID
    cabin: str
    cabin_id: uuid.UUID
    seats: int
    fare_amount: int
    currency: str
    designator: str
    origin: str
    destination: str
    departure_at: datetime
    departure_date: Any
    arrival_at: datetime
    aircraft_code: str


def visible_to(actor: Principal | None) -> list[sa.ColumnElement[bool]]:
    """Filters that hide other tenants' orders (and, from travellers, other people's orders).

    Another tenant's order is answered exactly like a missing one.
    """
    if actor is None:
        return []
    where: list[sa.ColumnElement[bool]] = []
    if actor.tenant_filter is not None:
        where.append(orders.c.tenant_id == actor.tenant_filter)
    if actor.owner_filter is not None:
        where.append(orders.c.created_by == actor.owner_filter)
    return where


async def lock_order(conn: AsyncConnection, order_id: uuid.UUID, actor: Principal | None = None) -> OrderRow:
    """Load an order and lock its row until the transaction ends (PostgreSQL; SQLite has one writer)."""
    row = (
        await conn.execute(sa.select(orders).where(orders.c.id == order_id, *visible_to(actor)).with_for_update())
    ).first()
    if row is None:
        raise NotFound(f"order {order_id} does not exist")
    return _order(row)


async def get_order_row(conn: AsyncConnection, order_id: uuid.UUID, actor: Principal | None = None) -> OrderRow:
    """Load an order without locking it."""
    row = (await conn.execute(sa.select(orders).where(orders.c.id == order_id, *visible_to(actor)))).first()
    if row is None:
        raise NotFound(f"order {order_id} does not exist")
    return _order(row)


def _order(row: sa.Row[Any]) -> OrderRow:
    return OrderRow(
        id=row.id,
        status=row.status,
        record_locator=row.record_locator,
        party=PartySize(row.adults, row.children, row.infants),
        total_amount=row.total_amount,
        currency=row.currency,
        expires_at=row.expires_at,
        contact_email=row.contact_email,
        ticketed_at=row.ticketed_at,
        tenant_id=row.tenant_id,
    )


async def load_segments(conn: AsyncConnection, order_id: uuid.UUID) -> list[SegmentRow]:
    """The segments of an order in itinerary order, with their flights."""
    s, f = order_segments.c, flights.c
    rows = await conn.execute(
        sa.select(
            s.segment_no,
            s.flight_id,
            s.booking_class,
            s.booking_class_id,
            s.cabin,
            s.cabin_id,
            s.seats,
            s.fare_amount,
            s.currency,
            f.carrier,
            f.flight_number,
            f.origin,
            f.destination,
            f.departure_at,
            f.departure_date,
            f.arrival_at,
            f.aircraft_code,
        )
        .join(flights, f.id == s.flight_id)
        .where(s.order_id == order_id)
        .order_by(s.segment_no)
    )
    return [
        SegmentRow(
            segment_no=r.segment_no,
            flight_id=r.flight_id,
            booking_class=r.booking_class,
            booking_class_id=r.booking_class_id,
            cabin=r.cabin,
            cabin_id=r.cabin_id,
            seats=r.seats,
            fare_amount=r.fare_amount,
            currency=r.currency,
            designator=f"{r.carrier}{r.flight_number}",
            origin=r.origin,
            destination=r.destination,
            departure_at=r.departure_at,
            departure_date=r.departure_date,
            arrival_at=r.arrival_at,
            aircraft_code=r.aircraft_code,
        )
        for r in rows
    ]


async def set_status(
    conn: AsyncConnection,
    order_id: uuid.UUID,
    *,
    expected: Sequence[str],
    status: str,
    **values: Any,
) -> bool:
    """Move an order to ``status`` only if it is still in one of ``expected`` (compare-and-set)."""
    result = await conn.execute(
        sa.update(orders)
        .where(orders.c.id == order_id, orders.c.status.in_(list(expected)))
        .values(status=status, **values)
    )
    return bool(result.rowcount)


async def assign_record_locator(conn: AsyncConnection, order_id: uuid.UUID) -> str:
    """Give the order a fresh record locator, retrying on the rare collision."""
    for _ in range(8):
        locator = new_record_locator()
        try:
            async with conn.begin_nested():
                await conn.execute(sa.update(orders).where(orders.c.id == order_id).values(record_locator=locator))
        except sa.exc.IntegrityError:
            continue
        return locator
    raise Conflict("could not allocate a record locator; retry")


_NEXT_SERIALS = sa.text("SELECT nextval('ticket_serial_seq') FROM generate_series(1, :n)")


async def allocate_ticket_serials(conn: AsyncConnection, accounting_code: str, count: int) -> list[int]:
    """Reserve ``count`` unique, increasing 10-digit ticket serials.

    PostgreSQL takes them from a sequence (no lock held until commit, so concurrent ticketing does
    not queue); SQLite, which has one writer anyway, from a counter row.
    """
    if conn.dialect.name == "postgresql":
        try:
            return [int(v) for v in await conn.scalars(_NEXT_SERIALS, {"n": count})]
        except sa.exc.DBAPIError as exc:
            if "maximum value" in str(exc):
                raise Conflict("ticket serial range exhausted") from exc
            raise
    stmt = (
        sa.update(ticket_serials)
        .where(ticket_serials.c.accounting_code == accounting_code)
        .values(last_serial=ticket_serials.c.last_serial + count)
        .returning(ticket_serials.c.last_serial)
    )
    last = await conn.scalar(stmt)
    if last is None:
        await conn.execute(
            insert_ignoring_conflicts(conn, ticket_serials).values(accounting_code=accounting_code, last_serial=0)
        )
        last = await conn.scalar(stmt)
    assert last is not None
    if last > 9_999_999_999:
        raise Conflict("ticket serial range exhausted")
    return list(range(last - count + 1, last + 1))


async def passenger_rows(conn: AsyncConnection, order_id: uuid.UUID) -> list[sa.Row[Any]]:
    """Passengers of an order in the order they were named."""
    return list(
        await conn.execute(
            sa.select(passengers).where(passengers.c.order_id == order_id).order_by(passengers.c.position)
        )
    )


async def free_seats(conn: AsyncConnection, order_id: uuid.UUID) -> None:
    """Drop the order's seat assignments so others can take those seats."""
    await conn.execute(sa.delete(seat_assignments).where(seat_assignments.c.order_id == order_id))


# Written as literal constants, not bound parameters: the text then matches the predicate of the
# partial index ix_orders_live_by_creator, which a generic (prepared) plan can only use when the
# query's condition is the index's own; and an expanding IN parameter is re-rendered on every run.
LIVE_ORDER = orders.c.status.in_([sa.literal_column("'held'"), sa.literal_column("'confirmed'")])


async def unpaid_seats_of(uow: UnitOfWork, principal_id: uuid.UUID, *, cap: int) -> int:
    """Seats a principal holds in live (unpaid) orders, counted up to just past ``cap``.

    Every live order holds at least one seat, so reading at most ``cap + 1`` of them is enough to
    know whether the cap is reached: the work per hold is bounded by the cap, not by the backlog.
    """
    row = await uow.one(_UNPAID_SEATS, {"unpaid_owner": principal_id, "unpaid_scan": cap + 1})
    return int(row["seats"]) if row is not None else 0


async def try_lock_order(conn: AsyncConnection, order_id: uuid.UUID) -> OrderRow | None:
    """Lock an order unless another transaction holds it (``SKIP LOCKED``); None if held or gone."""
    row = (
        await conn.execute(sa.select(orders).where(orders.c.id == order_id).with_for_update(skip_locked=True))
    ).first()
    return None if row is None else _order(row)


def _unpaid_seats_subquery() -> sa.ScalarSelect[Any]:
    live = (
        sa.select((orders.c.adults + orders.c.children).label("seats"))
        .where(
            orders.c.created_by == sa.bindparam("unpaid_owner", type_=orders.c.created_by.type),
            LIVE_ORDER,
        )
        .limit(sa.bindparam("unpaid_scan", type_=sa.Integer))
        .subquery()
    )
    return sa.select(sa.func.coalesce(sa.func.sum(live.c.seats), 0)).scalar_subquery()


# The unpaid-seat cap as a condition of the seat-taking statement (built once): the principal's
# unpaid seats, counted like ``unpaid_seats_of``, plus the seats asked for, within the cap. It costs
# no round trip of its own; on a refusal the caller counts again to tell the cap from a sell-out.
UNPAID_CAP_GUARD: sa.ColumnElement[bool] = _unpaid_seats_subquery() + sa.bindparam(
    "n", type_=sa.Integer
) <= sa.bindparam("unpaid_cap", type_=sa.Integer)


_UNPAID_SEATS = sa.select(_unpaid_seats_subquery().label("seats"))


def unpaid_cap_params(principal_id: uuid.UUID, *, cap: int) -> dict[str, Any]:
    """Values of ``UNPAID_CAP_GUARD`` for one principal and its plan's cap."""
    return {"unpaid_owner": principal_id, "unpaid_scan": cap + 1, "unpaid_cap": cap}


# Pay routes wait on this channel for their order's tickets (skybook.platform.signals).
TICKETED_CHANNEL = "skybook_order_ticketed"
_ANNOUNCE = sa.select(sa.func.pg_notify(TICKETED_CHANNEL, sa.bindparam("order_id", type_=sa.String)))
_STATUS_OF = sa.select(orders.c.status).where(orders.c.id == sa.bindparam("order_id", type_=orders.c.id.type))


async def announce_ticketed(conn: AsyncConnection, order_id: uuid.UUID) -> None:
    """Tell waiting pay requests (any API process) that the order is ticketed, once this commits.

    PostgreSQL delivers a NOTIFY only when its transaction commits, and not at all when it rolls
    back, so a listener never hears of tickets that do not exist. Nothing to do on SQLite.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(_ANNOUNCE, {"order_id": str(order_id)})


async def status_of(conn: AsyncConnection, order_id: uuid.UUID) -> str | None:
    """The order's status alone: what a waiter re-reads (access was checked before it waited)."""
    status: str | None = await conn.scalar(_STATUS_OF, {"order_id": order_id})
    return status


# ---------------------------------------------------------------------------------------------
# The single-segment hold as one statement (PostgreSQL)
# ---------------------------------------------------------------------------------------------

_ORDER_COLUMNS = (
    "id",
    "status",
    "tenant_id",
    "created_by",
    "adults",
    "children",
    "infants",
    "total_amount",
    "currency",
    "expires_at",
    "created_at",
)
_SEGMENT_COLUMNS = (
    "order_id",
    "segment_no",
    "flight_id",
    "booking_class",
    "booking_class_id",
    "cabin",
    "cabin_id",
    "seats",
    "fare_amount",
    "currency",
)
_OUTBOX_COLUMNS = (
    "event_id",
    "type",
    "version",
    "context",
    "occurred_at",
    "tenant_id",
    "aggregate_id",
    "correlation_id",
    "causation_id",
    "data",
)
_one_statement_cache: dict[int, tuple[sa.ColumnElement[bool] | None, sa.Select[Any]]] = {}


def price_sql(
    adult_fare: sa.ColumnElement[Any],
    *,
    adults: sa.ColumnElement[Any],
    children: sa.ColumnElement[Any],
    infants: sa.ColumnElement[Any],
) -> sa.ColumnElement[Any]:
    """``PartySize.price`` as a SQL expression, for a statement that learns the fare as it takes seats.

    Integer arithmetic on both sides: PostgreSQL's ``/`` on integers truncates, which for the
    non-negative fares and counts here is Python's ``//``. Tests hold the two to the same result.
    """
    child = (adult_fare * CHILD_FARE_PERCENT) // 100
    infant = (adult_fare * INFANT_FARE_PERCENT) // 100
    return adults * adult_fare + children * child + infants * infant


def _p(name: str, column: sa.Column[Any]) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=column.type)


def one_statement_hold(guard: sa.ColumnElement[bool] | None) -> sa.Select[Any]:
    """A single-segment hold in one statement, built once per guard: take the seats (inventory's
    ``take_ctes``), write the order, its segment and its two events, return what was taken.

    Every write selects from ``klass JOIN cabin``, so nothing is written unless both the class and
    the cabin had room. When the class had room and the cabin did not, the class's count already
    moved: the returned row then calls ``skybook_refuse('sold_out')`` (migration 0008), which
    raises ``StatementRefused`` and rolls the whole statement back. No row at all: nothing was taken, nothing written.

    The order's total is ``PartySize.price`` written in SQL (``price_sql``); ``hold.created``'s
    ``data`` arrives without its ``total``, which is added from the same expression. The statement
    returns the total so the caller can check it against ``PartySize.price``.

    Parameters: ``fid``, ``p_code``, ``n``, ``now`` (and the guard's) for the seats; ``order_id``,
    ``tenant_id``, ``created_by``, ``adults``, ``children``, ``infants``, ``expires_at``,
    ``created_at``; ``e1_*`` and ``e2_*`` for the two events' outbox columns.
    """
    cached = _one_statement_cache.get(id(guard))
    if cached is not None and cached[0] is guard:
        return cached[1]
    klass, cabin = inventory.take_ctes(guard)
    both = klass.join(cabin, cabin.c.taken_cabin_id == klass.c.cabin_id)
    total = price_sql(
        klass.c.fare_amount,
        adults=_p("adults", orders.c.adults),
        children=_p("children", orders.c.children),
        infants=_p("infants", orders.c.infants),
    ).label("total")
    o = orders.c
    write_order = (
        sa.insert(orders)
        .from_select(
            list(_ORDER_COLUMNS),
            sa.select(
                _p("order_id", o.id),
                sa.literal("held", o.status.type),
                _p("tenant_id", o.tenant_id),
                _p("created_by", o.created_by),
                _p("adults", o.adults),
                _p("children", o.children),
                _p("infants", o.infants),
                total,
                klass.c.currency,
                _p("expires_at", o.expires_at),
                _p("created_at", o.created_at),
            ).select_from(both),
        )
        .cte("write_order")
    )
    s = order_segments.c
    write_segment = (
        sa.insert(order_segments)
        .from_select(
            list(_SEGMENT_COLUMNS),
            sa.select(
                _p("order_id", s.order_id),
                sa.literal(1, s.segment_no.type),
                _p("fid", s.flight_id),
                _p("p_code", s.booking_class),
                klass.c.id,
                cabin.c.cabin_code,
                klass.c.cabin_id,
                _p("n", s.seats),
                klass.c.fare_amount,
                klass.c.currency,
            ).select_from(both),
        )
        .cte("write_segment")
    )
    ob = outbox.c
    price = sa.func.jsonb_build_object(
        "total", sa.func.jsonb_build_object("amount", total.element, "currency", klass.c.currency)
    )

    def event(prefix: str, data: sa.ColumnElement[Any]) -> sa.Select[Any]:
        return sa.select(*(_p(f"{prefix}_{c}", ob[c]) for c in _OUTBOX_COLUMNS if c != "data"), data).select_from(both)

    write_events = (
        sa.insert(outbox)
        .from_select(
            list(_OUTBOX_COLUMNS),
            sa.union_all(
                event("e1", _p("e1_data", ob.data).op("||")(price)),
                event("e2", _p("e2_data", ob.data)),
            ),
        )
        .cte("write_events")
    )
    refuse = sa.case(
        (cabin.c.cabin_code.is_(None), sa.func.skybook_refuse(sa.literal("sold_out", sa.Text))), else_=None
    ).label("refused")
    stmt = (
        sa.select(klass, cabin.c.cabin_code, total, refuse)
        .select_from(klass.outerjoin(cabin, cabin.c.taken_cabin_id == klass.c.cabin_id))
        .add_cte(write_order, write_segment, write_events)
    )
    _one_statement_cache[id(guard)] = (guard, stmt)
    return stmt

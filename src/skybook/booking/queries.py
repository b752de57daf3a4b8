"""Read side of the booking context: order views, look-ups and seat maps."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook import inventory
from skybook.booking.model import name_key
from skybook.booking.repository import visible_to
from skybook.booking.tables import (
    order_segments,
    orders,
    passengers,
    seat_assignments,
    ticket_coupons,
    tickets,
)
from skybook.payments import payments as payment_rows
from skybook.platform.errors import NotFound
from skybook.platform.security import Principal

if TYPE_CHECKING:
    from skybook.booking.handlers import HeldOrder

f = inventory.flights.c

# ZoneInfo(name) is cached only while some object holds the zone, plus the 8 most recent; a network
# has more zones than that, so views kept re-reading tz files from disk. Holding every zone met
# (a few hundred at most) makes the ZoneInfo(name) calls that render local times dictionary hits.
_zones: dict[str, ZoneInfo] = {}


def _keep_zones(*names: str) -> None:
    for name in names:
        if name not in _zones:
            # A bad zone name is reported when the view is rendered; there is nothing to keep here.
            with contextlib.suppress(ValueError, ZoneInfoNotFoundError):
                _zones[name] = ZoneInfo(name)


async def order_view(conn: AsyncConnection, order_id: uuid.UUID, actor: Principal | None = None) -> dict[str, Any]:
    """Everything about one order, shaped like ``OrderRead``."""
    views = await _order_views(conn, [orders.c.id == order_id, *visible_to(actor)])
    if not views:
        raise NotFound(f"order {order_id} does not exist")
    return views[0]


def held_order_view(hold: HeldOrder) -> dict[str, Any]:
    """A just-committed hold, shaped like ``order_view`` (every field ``OrderRead`` shows).

    A new hold has no record locator, contact, passengers, seats or tickets yet; everything else
    was returned by the statements that took the seats, so answering needs no second query.
    bench/booking.py checks on every run that the answer equals GET /v1/holds/{id}.
    """
    _keep_zones(*(z for t in hold.segments for z in (t.origin_zone, t.destination_zone)))
    return {
        "id": hold.id,
        "status": "held",
        "record_locator": None,
        "adults": hold.party.adults,
        "children": hold.party.children,
        "infants": hold.party.infants,
        "total_amount": hold.total_amount,
        "currency": hold.currency,
        "expires_at": hold.expires_at,
        "contact_email": None,
        "contact_phone": None,
        "created_at": hold.created_at,
        "confirmed_at": None,
        "ticketed_at": None,
        "cancelled_at": None,
        "segments": [
            {
                "order_id": hold.id,
                "segment_no": i,
                "flight_id": t.flight_id,
                "booking_class": t.booking_class,
                "booking_class_id": t.booking_class_id,
                "cabin": t.cabin,
                "cabin_id": t.cabin_id,
                "seats": t.seats,
                "fare_amount": t.fare_amount,
                "currency": t.currency,
                "carrier": t.carrier,
                "flight_number": t.flight_number,
                "origin": t.origin,
                "destination": t.destination,
                "departure_at": t.departure_at,
                "arrival_at": t.arrival_at,
                "origin_zone": t.origin_zone,
                "destination_zone": t.destination_zone,
            }
            for i, t in enumerate(hold.segments, start=1)
        ],
        "passengers": [],
        "tickets": [],
        "payment_status": None,
    }


async def find_by_locator(
    conn: AsyncConnection, record_locator: str, family_name: str, actor: Principal | None = None
) -> dict[str, Any]:
    """'Manage my booking': the order with this locator that has a passenger of this family name.

    A wrong name answers exactly like a wrong locator, so locators cannot be probed by name.
    """
    key = name_key(family_name)
    match = sa.exists().where(passengers.c.order_id == orders.c.id, passengers.c.family_name_key == key)
    views = await _order_views(conn, [orders.c.record_locator == record_locator.upper(), match, *visible_to(actor)])
    if not views:
        raise NotFound("no booking matches this record locator and family name")
    return views[0]


async def list_orders(
    conn: AsyncConnection,
    *,
    status: str | None,
    created_from: date | None,
    created_to: date | None,
    flight_id: uuid.UUID | None,
    offset: int,
    limit: int,
    actor: Principal | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Orders matching filters, newest first, among those the actor may see."""
    where: list[sa.ColumnElement[bool]] = visible_to(actor)
    if status:
        where.append(orders.c.status == status)
    if created_from:
        where.append(orders.c.created_at >= datetime.combine(created_from, datetime.min.time(), tzinfo=UTC))
    if created_to:
        where.append(orders.c.created_at < datetime.combine(created_to, datetime.max.time(), tzinfo=UTC))
    if flight_id:
        where.append(
            sa.exists().where(order_segments.c.order_id == orders.c.id, order_segments.c.flight_id == flight_id)
        )
    total = await conn.scalar(sa.select(sa.func.count()).select_from(orders).where(*where)) or 0
    return await _order_views(conn, where, offset=offset, limit=limit), total


async def _order_views(
    conn: AsyncConnection,
    where: list[sa.ColumnElement[bool]],
    *,
    offset: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    stmt = sa.select(orders).where(*where).order_by(orders.c.created_at.desc(), orders.c.id).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = [dict(r._mapping) for r in await conn.execute(stmt)]
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    views = {r["id"]: {**r, "segments": [], "passengers": [], "tickets": [], "payment_status": None} for r in rows}
    origin = inventory.airports.alias("o")
    dest = inventory.airports.alias("d")
    seg_rows = await conn.execute(
        sa.select(
            order_segments,
            f.carrier,
            f.flight_number,
            f.origin,
            f.destination,
            f.departure_at,
            f.arrival_at,
            origin.c.time_zone.label("origin_zone"),
            dest.c.time_zone.label("destination_zone"),
        )
        .join(inventory.flights, f.id == order_segments.c.flight_id)
        .join(origin, origin.c.iata == f.origin)
        .join(dest, dest.c.iata == f.destination)
        .where(order_segments.c.order_id.in_(ids))
        .order_by(order_segments.c.segment_no)
    )
    for s in seg_rows:
        _keep_zones(s.origin_zone, s.destination_zone)
        views[s.order_id]["segments"].append(dict(s._mapping))
    seats: dict[tuple[uuid.UUID, uuid.UUID], str] = {}
    for a in await conn.execute(sa.select(seat_assignments).where(seat_assignments.c.order_id.in_(ids))):
        seats[(a.passenger_id, a.flight_id)] = a.seat_number
    for p in await conn.execute(
        sa.select(passengers).where(passengers.c.order_id.in_(ids)).order_by(passengers.c.position)
    ):
        pv = dict(p._mapping)
        pv["seats"] = [
            {"flight_id": s["flight_id"], "seat": seats[(p.id, s["flight_id"])]}
            for s in views[p.order_id]["segments"]
            if (p.id, s["flight_id"]) in seats
        ]
        views[p.order_id]["passengers"].append(pv)
    coupons: dict[str, list[dict[str, Any]]] = {}
    ticket_rows = list(await conn.execute(sa.select(tickets).where(tickets.c.order_id.in_(ids))))
    if ticket_rows:
        for c in await conn.execute(
            sa.select(ticket_coupons)
            .where(ticket_coupons.c.ticket_number.in_([t.number for t in ticket_rows]))
            .order_by(ticket_coupons.c.coupon_no)
        ):
            coupons.setdefault(c.ticket_number, []).append(dict(c._mapping))
    for t in sorted(ticket_rows, key=lambda t: t.number):
        views[t.order_id]["tickets"].append({**t._mapping, "coupons": coupons.get(t.number, [])})
    # The latest payment attempt tells a paid order waiting for its tickets from an unpaid one.
    for pay in await conn.execute(
        sa.select(payment_rows.c.order_id, payment_rows.c.status)
        .where(payment_rows.c.order_id.in_(ids))
        .order_by(payment_rows.c.created_at, payment_rows.c.id)
    ):
        views[pay.order_id]["payment_status"] = pay.status
    return [views[i] for i in ids]


async def seat_map(conn: AsyncConnection, flight_id: uuid.UUID) -> dict[str, Any]:
    """A flight's seat map with which seats are still free."""
    flight = (
        await conn.execute(sa.select(f.id, f.carrier, f.flight_number, f.aircraft_code).where(f.id == flight_id))
    ).first()
    if flight is None:
        raise NotFound(f"flight {flight_id} does not exist")
    layout = await inventory.get_seat_map(conn, flight.aircraft_code)
    taken = set(
        await conn.scalars(sa.select(seat_assignments.c.seat_number).where(seat_assignments.c.flight_id == flight_id))
    )
    cabins: dict[str, list[dict[str, Any]]] = {}
    for seat in layout.seats():
        cabins.setdefault(seat.cabin, []).append(
            {
                "number": seat.number,
                "row": seat.row,
                "letter": seat.letter,
                "window": seat.window,
                "aisle": seat.aisle,
                "exit_row": seat.exit_row,
                "available": seat.number not in taken,
            }
        )
    return {
        "flight_id": flight.id,
        "designator": f"{flight.carrier}{flight.flight_number}",
        "aircraft": flight.aircraft_code,
        "cabins": [{"cabin": code, "seats": seats} for code, seats in cabins.items()],
    }

"""Seat counting: the only code that changes a flight's held and sold counts.

Every change is a conditional UPDATE inside the caller's transaction, so a count never goes
negative or past capacity + authorised overbooking, whatever runs concurrently. Callers take
seats in a sorted (flight, booking class) order so two transactions never wait on each other in
a cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.inventory.tables import airports, booking_classes, flight_cabins, flights
from skybook.platform.errors import BookingClassClosed, FlightNotBookable, NotFound, SoldOut
from skybook.platform.uow import UnitOfWork

bc = booking_classes.c
cab = flight_cabins.c


@dataclass(frozen=True, slots=True)
class TakenSeats:
    """Seats taken in one booking class of one flight, with the flight and the fare they sell at."""

    flight_id: uuid.UUID
    booking_class: str
    booking_class_id: uuid.UUID
    cabin_id: uuid.UUID
    cabin: str
    fare_amount: int
    currency: str
    seats: int
    designator: str
    origin: str
    destination: str
    departure_at: datetime
    arrival_at: datetime
    carrier: str
    flight_number: str
    origin_zone: str
    destination_zone: str


fl = flights.c
_origin = airports.alias("origin_airport")
_destination = airports.alias("destination_airport")

_class_has_room = (
    bc.flight_id == sa.bindparam("fid"),
    bc.code == sa.bindparam("p_code"),
    bc.is_open.is_(True),
    bc.held + bc.sold + sa.bindparam("n") <= bc.seat_limit,
)
_flight_on_sale = (
    fl.id == bc.flight_id,
    fl.status == "scheduled",
    fl.departure_at > sa.bindparam("now", type_=fl.departure_at.type),
)
_flight_details = (
    fl.carrier,
    fl.flight_number,
    fl.origin,
    fl.destination,
    fl.departure_at,
    fl.arrival_at,
    _origin.c.time_zone.label("origin_zone"),
    _destination.c.time_zone.label("destination_zone"),
)
_flight_airports = (_origin.c.iata == fl.origin, _destination.c.iata == fl.destination)

# PostgreSQL takes the seats with one statement (``_take_both`` below): it checks the flight is on
# sale and the class has room, takes the seats in the class and in its cabin, and returns what the
# hold needs to price and describe the segment, the airports' time zones included, so the hold can
# be answered without reading it back.
# SQLite's RETURNING cannot name another table's columns, so it reads the flight separately.
_take_class = (
    sa.update(booking_classes)
    .where(*_class_has_room, sa.select(fl.id).where(*_flight_on_sale).exists())
    .values(held=bc.held + sa.bindparam("n"))
    .returning(bc.id, bc.cabin_id, bc.fare_amount, bc.currency)
)
_select_flight = sa.select(*_flight_details).where(fl.id == sa.bindparam("fid"), *_flight_airports)
_take_class_guarded_cache: dict[int, tuple[sa.ColumnElement[bool], sa.Update]] = {}


def _take_class_guarded(guard: sa.ColumnElement[bool]) -> sa.Update:
    # Built once per guard, like ``_take_both``: a statement built per call is compiled per call.
    cached = _take_class_guarded_cache.get(id(guard))
    if cached is not None and cached[0] is guard:
        return cached[1]
    stmt = _take_class.where(guard)
    _take_class_guarded_cache[id(guard)] = (guard, stmt)
    return stmt


_take_cabin = (
    sa.update(flight_cabins)
    .where(
        cab.id == sa.bindparam("cid"),
        cab.held + cab.sold + sa.bindparam("n") <= cab.capacity + cab.overbooking_limit,
    )
    .values(held=cab.held + sa.bindparam("n"))
    .returning(cab.cabin_code)
)


# PostgreSQL, one round trip: the class UPDATE above and the cabin's as data-modifying CTEs, built
# per guard (see ``take_seats``) and kept, so each variant is compiled once.
_take_both_cache: dict[int, tuple[sa.ColumnElement[bool] | None, sa.Select[Any]]] = {}


_take_ctes_cache: dict[int, tuple[sa.ColumnElement[bool] | None, tuple[sa.CTE, sa.CTE]]] = {}


def take_ctes(guard: sa.ColumnElement[bool] | None) -> tuple[sa.CTE, sa.CTE]:
    """The two seat-taking UPDATEs as data-modifying CTEs (``klass``, ``cabin``), built once per guard.

    ``klass`` takes the seats in the booking class when it is open, has room, its flight is on sale
    and ``guard`` holds, and returns the class, its fare and the flight's details; ``cabin`` takes
    them in the class's cabin when the cabin has room (plus authorised overbooking) and returns
    ``taken_cabin_id`` and ``cabin_code``. Parameters: ``fid``, ``p_code``, ``n``, ``now`` and the
    guard's. A caller joining ``klass`` to ``cabin`` (inner) sees a row only when both took seats;
    a ``klass`` row without a ``cabin`` row means the class's count moved and must be rolled back.
    """
    cached = _take_ctes_cache.get(id(guard))
    if cached is not None and cached[0] is guard:
        return cached[1]
    where = [*_class_has_room, *_flight_on_sale, *_flight_airports]
    if guard is not None:
        where.append(guard)
    klass = (
        sa.update(booking_classes)
        .where(*where)
        .values(held=bc.held + sa.bindparam("n"))
        .returning(bc.id, bc.cabin_id, bc.fare_amount, bc.currency, *_flight_details)
        .cte("klass")
    )
    cabin = (
        sa.update(flight_cabins)
        .where(
            cab.id == klass.c.cabin_id,
            cab.held + cab.sold + sa.bindparam("n") <= cab.capacity + cab.overbooking_limit,
        )
        .values(held=cab.held + sa.bindparam("n"))
        .returning(cab.id.label("taken_cabin_id"), cab.cabin_code)
        .cte("cabin")
    )
    _take_ctes_cache[id(guard)] = (guard, (klass, cabin))
    return klass, cabin


def _take_both(guard: sa.ColumnElement[bool] | None) -> sa.Select[Any]:
    cached = _take_both_cache.get(id(guard))
    if cached is not None and cached[0] is guard:
        return cached[1]
    klass, cabin = take_ctes(guard)
    stmt = sa.select(klass, cabin.c.cabin_code).select_from(
        klass.outerjoin(cabin, cabin.c.taken_cabin_id == klass.c.cabin_id)
    )
    _take_both_cache[id(guard)] = (guard, stmt)
    return stmt


def taken_from_row(row: Mapping[str, Any], *, flight_id: uuid.UUID, booking_class: str, seats: int) -> TakenSeats:
    """What a seat-taking statement that returned ``klass``'s columns and ``cabin_code`` took."""
    return TakenSeats(
        flight_id=flight_id,
        booking_class=booking_class,
        booking_class_id=row["id"],
        cabin_id=row["cabin_id"],
        cabin=row["cabin_code"],
        fare_amount=row["fare_amount"],
        currency=row["currency"],
        seats=seats,
        designator=f"{row['carrier']}{row['flight_number']}",
        origin=row["origin"],
        destination=row["destination"],
        departure_at=row["departure_at"],
        arrival_at=row["arrival_at"],
        carrier=row["carrier"],
        flight_number=row["flight_number"],
        origin_zone=row["origin_zone"],
        destination_zone=row["destination_zone"],
    )


async def take_seats(
    uow: UnitOfWork,
    *,
    flight_id: uuid.UUID,
    booking_class: str,
    seats: int,
    now: datetime,
    guard: sa.ColumnElement[bool] | None = None,
    guard_params: Mapping[str, Any] | None = None,
) -> TakenSeats:
    """Hold ``seats`` in a booking class, or raise sold_out / booking_class_closed / not found.

    Runs inside the caller's unit of work, with ``uow.one`` so that a raw unit of work (PostgreSQL,
    asyncpg directly) takes the hot path without SQLAlchemy's execution layer.

    ``guard`` is a condition of the caller's (built once, with its values in ``guard_params``)
    that must also hold for the seats to be taken; it is evaluated in the seat-taking statement
    itself, so it costs no round trip. When seats are refused the caller cannot tell from the
    error whether the guard or the inventory refused; a caller that passes a guard checks it
    again on refusal.
    """
    params: dict[str, Any] = {"fid": flight_id, "p_code": booking_class, "n": seats, "now": now}
    if guard_params:
        params.update(guard_params)
    if uow.dialect_name == "postgresql":
        row = await uow.one(_take_both(guard), params)
        if row is None:
            await explain_refusal(uow, flight_id=flight_id, booking_class=booking_class, seats=seats, now=now)
            raise AssertionError("unreachable")  # pragma: no cover
        if row["cabin_code"] is None:
            # The class UPDATE took seats the cabin does not have: the caller's transaction rolls back.
            raise SoldOut(
                f"the cabin of booking class {booking_class} has fewer than {seats} seats left",
                flight_id=str(flight_id),
            )
        return taken_from_row(row, flight_id=flight_id, booking_class=booking_class, seats=seats)
    else:
        take = _take_class if guard is None else _take_class_guarded(guard)
        row = await uow.one(take, params)
        if row is None:
            await explain_refusal(uow, flight_id=flight_id, booking_class=booking_class, seats=seats, now=now)
            raise AssertionError("unreachable")  # pragma: no cover
        cabin = await uow.one(_take_cabin, {"cid": row["cabin_id"], "n": seats})
        if cabin is None:
            raise SoldOut(
                f"the cabin of booking class {booking_class} has fewer than {seats} seats left",
                flight_id=str(flight_id),
            )
        cabin_code: str = cabin["cabin_code"]
        found = await uow.one(_select_flight, {"fid": flight_id})
        if found is None:  # pragma: no cover - the class UPDATE just found the flight
            raise NotFound(f"flight {flight_id} does not exist", flight_id=str(flight_id))
        # The class row, the cabin's code and the flight's details, as PostgreSQL's one statement returns them.
        merged = {**found, **row, "cabin_code": cabin_code}
    return taken_from_row(merged, flight_id=flight_id, booking_class=booking_class, seats=seats)


_flight_state = sa.select(fl.status, fl.departure_at).where(fl.id == sa.bindparam("fid", type_=fl.id.type))
_class_state = sa.select(bc.is_open).where(
    bc.flight_id == sa.bindparam("fid", type_=bc.flight_id.type), bc.code == sa.bindparam("p_code", type_=bc.code.type)
)


async def explain_refusal(
    uow: UnitOfWork, *, flight_id: uuid.UUID, booking_class: str, seats: int, now: datetime
) -> None:
    """Raise why a seat-taking statement took nothing: no such flight or class, not on sale, closed, sold out."""
    flight = await uow.one(_flight_state, {"fid": flight_id})
    if flight is None:
        raise NotFound(f"flight {flight_id} does not exist", flight_id=str(flight_id))
    if flight["status"] != "scheduled" or flight["departure_at"] <= now:
        raise FlightNotBookable(f"flight {flight_id} is {flight['status']} or has departed", flight_id=str(flight_id))
    klass = await uow.one(_class_state, {"fid": flight_id, "p_code": booking_class})
    if klass is None:
        raise NotFound(f"flight {flight_id} sells no booking class {booking_class}", flight_id=str(flight_id))
    if not klass["is_open"]:
        raise BookingClassClosed(f"booking class {booking_class} is closed", flight_id=str(flight_id))
    raise SoldOut(f"booking class {booking_class} has fewer than {seats} seats left", flight_id=str(flight_id))


class SeatLine(Protocol):
    """Seats of one segment: what release and sell need to find the counters."""

    @property
    def flight_id(self) -> uuid.UUID: ...
    @property
    def booking_class(self) -> str: ...
    @property
    def booking_class_id(self) -> uuid.UUID: ...
    @property
    def cabin_id(self) -> uuid.UUID: ...
    @property
    def seats(self) -> int: ...


_move_class = sa.update(booking_classes).where(bc.id == sa.bindparam("bid"))
_move_cabin = sa.update(flight_cabins).where(cab.id == sa.bindparam("cid"))


async def release_held(conn: AsyncConnection, items: Sequence[SeatLine]) -> None:
    """Give back held seats."""
    await _shift(conn, items, held=-1, sold=0)


async def sell_held(conn: AsyncConnection, items: Sequence[SeatLine]) -> None:
    """Turn held seats into sold seats on ticketing."""
    await _shift(conn, items, held=-1, sold=+1)


async def release_sold(conn: AsyncConnection, items: Sequence[SeatLine]) -> None:
    """Give back sold seats when a ticketed order is cancelled."""
    await _shift(conn, items, held=0, sold=-1)


async def _shift(conn: AsyncConnection, items: Sequence[SeatLine], *, held: int, sold: int) -> None:
    # Same lock order as take_seats: by flight, then booking class, then its cabin.
    for line in sorted(items, key=lambda i: (str(i.flight_id), i.booking_class)):
        n = line.seats
        await conn.execute(
            _move_class.values(held=bc.held + held * n, sold=bc.sold + sold * n),
            {"bid": line.booking_class_id},
        )
        await conn.execute(
            _move_cabin.values(held=cab.held + held * n, sold=cab.sold + sold * n),
            {"cid": line.cabin_id},
        )


async def seat_counts(conn: AsyncConnection) -> list[sa.Row[tuple[uuid.UUID, int, int, int, int]]]:
    """Held and sold per cabin with capacity, for invariant audits."""
    return list(await conn.execute(sa.select(cab.id, cab.capacity, cab.overbooking_limit, cab.held, cab.sold)))

"""Persistence of the inventory context (SQLAlchemy Core)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.inventory.model import CabinLayout, DatedFlight, FareSpec, SeatMap
from skybook.inventory.tables import (
    aircraft_types,
    airports,
    booking_classes,
    flight_cabins,
    flights,
)
from skybook.platform.errors import NotFound, UnknownAirport
from skybook.platform.events import uuid7


def seat_map_from_json(raw: list[dict[str, Any]]) -> SeatMap:
    """Rebuild a seat map from its stored JSON."""
    return SeatMap(
        tuple(
            CabinLayout(
                cabin=c["cabin"],
                name=c.get("name", ""),
                first_row=c["first_row"],
                last_row=c["last_row"],
                layout=c["layout"],
                exit_rows=tuple(c.get("exit_rows", ())),
            )
            for c in raw
        )
    )


async def airport_zones(conn: AsyncConnection, codes: Iterable[str]) -> dict[str, str]:
    """Time zone per airport code; raises ``unknown_airport`` for a code not in the network."""
    wanted = set(codes)
    rows = await conn.execute(sa.select(airports.c.iata, airports.c.time_zone).where(airports.c.iata.in_(wanted)))
    zones = {r.iata: r.time_zone for r in rows}
    missing = sorted(wanted - zones.keys())
    if missing:
        raise UnknownAirport(f"unknown airport: {', '.join(missing)}", airports=missing)
    return zones


async def get_seat_map(conn: AsyncConnection, aircraft_code: str) -> SeatMap:
    """Seat map of an aircraft type."""
    raw = await conn.scalar(sa.select(aircraft_types.c.seat_map).where(aircraft_types.c.code == aircraft_code))
    if raw is None:
        raise NotFound(f"aircraft type {aircraft_code} does not exist")
    return seat_map_from_json(raw)


async def existing_flight_keys(
    conn: AsyncConnection, carrier: str, numbers: Iterable[str], first: date, last: date
) -> set[tuple[str, date]]:
    """(flight_number, departure_date) pairs of a carrier that already exist in a period."""
    rows = await conn.execute(
        sa.select(flights.c.flight_number, flights.c.departure_date).where(
            flights.c.carrier == carrier,
            flights.c.flight_number.in_(set(numbers)),
            flights.c.departure_date.between(first, last),
        )
    )
    return {(r.flight_number, r.departure_date) for r in rows}


async def insert_flights(
    conn: AsyncConnection,
    planned: Sequence[tuple[DatedFlight, Sequence[FareSpec], dict[str, int], dict[str, int]]],
    *,
    now: datetime,
) -> list[uuid.UUID]:
    """Insert dated flights with their cabins and booking classes in three bulk statements.

    Each item is (flight, fares, capacity per cabin, overbooking per cabin).
    """
    flight_rows: list[dict[str, Any]] = []
    cabin_rows: list[dict[str, Any]] = []
    class_rows: list[dict[str, Any]] = []
    for f, fares, capacity, overbooking in planned:
        flight_id = uuid7()
        flight_rows.append(
            {
                "id": flight_id,
                "carrier": f.carrier,
                "flight_number": f.flight_number,
                "departure_date": f.departure_date,
                "origin": f.origin,
                "destination": f.destination,
                "departure_at": f.departure_at,
                "arrival_at": f.arrival_at,
                "aircraft_code": f.aircraft,
                "status": "scheduled",
                "created_at": now,
            }
        )
        cabin_ids: dict[str, uuid.UUID] = {}
        for cabin_code, seats in capacity.items():
            cabin_ids[cabin_code] = cabin_id = uuid7()
            cabin_rows.append(
                {
                    "id": cabin_id,
                    "flight_id": flight_id,
                    "cabin_code": cabin_code,
                    "capacity": seats,
                    "overbooking_limit": overbooking.get(cabin_code, 0),
                    "held": 0,
                    "sold": 0,
                }
            )
        for fare in fares:
            class_rows.append(
                {
                    "id": uuid7(),
                    "flight_id": flight_id,
                    "cabin_id": cabin_ids[fare.cabin],
                    "code": fare.booking_class,
                    "fare_amount": fare.amount,
                    "currency": fare.currency,
                    "seat_limit": fare.seat_limit,
                    "held": 0,
                    "sold": 0,
                    "is_open": True,
                }
            )
    if flight_rows:
        await conn.execute(sa.insert(flights), flight_rows)
        await conn.execute(sa.insert(flight_cabins), cabin_rows)
        await conn.execute(sa.insert(booking_classes), class_rows)
    return [r["id"] for r in flight_rows]


async def load_flights(
    conn: AsyncConnection,
    where: Sequence[sa.ColumnElement[bool]],
    *,
    offset: int = 0,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Flights matching ``where`` with cabins, classes and airport zones, sorted by departure."""
    origin = airports.alias("o")
    dest = airports.alias("d")
    total = await conn.scalar(sa.select(sa.func.count()).select_from(flights).where(*where)) or 0
    stmt = (
        sa.select(
            flights,
            origin.c.time_zone.label("origin_zone"),
            dest.c.time_zone.label("destination_zone"),
        )
        .join(origin, origin.c.iata == flights.c.origin)
        .join(dest, dest.c.iata == flights.c.destination)
        .where(*where)
        .order_by(flights.c.departure_at, flights.c.carrier, flights.c.flight_number)
        .offset(offset)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    flight_list = [dict(r._mapping) for r in await conn.execute(stmt)]
    if not flight_list:
        return [], total
    ids = [f["id"] for f in flight_list]
    cabins: dict[uuid.UUID, list[dict[str, Any]]] = {i: [] for i in ids}
    for r in await conn.execute(
        sa.select(flight_cabins).where(flight_cabins.c.flight_id.in_(ids)).order_by(flight_cabins.c.cabin_code)
    ):
        cabins[r.flight_id].append({**r._mapping, "booking_classes": []})
    by_cabin = {c["id"]: c for cs in cabins.values() for c in cs}
    for r in await conn.execute(
        sa.select(booking_classes)
        .where(booking_classes.c.flight_id.in_(ids))
        .order_by(booking_classes.c.fare_amount.desc(), booking_classes.c.code)
    ):
        by_cabin[r.cabin_id]["booking_classes"].append(dict(r._mapping))
    for f in flight_list:
        f["cabins"] = cabins[f["id"]]
    return flight_list, total

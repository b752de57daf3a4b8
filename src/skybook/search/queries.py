"""Flight search over the inventory tables: direct flights, one-way and round trip."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook import inventory
from skybook.booking import PartySize
from skybook.platform.errors import DateInPast, InvalidRequest, UnknownAirport
from skybook.platform.schemas import Money
from skybook.search.schemas import Offer, OfferSegment, SearchQuery

f = inventory.flights.c
bc = inventory.booking_classes.c
cab = inventory.flight_cabins.c
ap = inventory.airports.c

_options_stmt = (
    sa.select(
        f.id,
        f.carrier,
        f.flight_number,
        f.origin,
        f.destination,
        f.departure_at,
        f.arrival_at,
        f.aircraft_code,
        bc.code,
        bc.fare_amount,
        bc.currency,
        (bc.seat_limit - bc.held - bc.sold).label("class_left"),
        (cab.capacity + cab.overbooking_limit - cab.held - cab.sold).label("cabin_left"),
    )
    .join(inventory.booking_classes, bc.flight_id == f.id)
    .join(inventory.flight_cabins, cab.id == bc.cabin_id)
    .where(
        f.origin == sa.bindparam("origin"),
        f.destination == sa.bindparam("destination"),
        f.departure_date == sa.bindparam("day"),
        f.status == "scheduled",
        f.departure_at > sa.bindparam("now", type_=f.departure_at.type),
        cab.cabin_code == sa.bindparam("cabin"),
        bc.is_open.is_(True),
        bc.seat_limit - bc.held - bc.sold >= sa.bindparam("seats"),
        cab.capacity + cab.overbooking_limit - cab.held - cab.sold >= sa.bindparam("seats"),
    )
)


async def search(
    conn: AsyncConnection, q: SearchQuery, *, now: datetime, max_passengers: int
) -> tuple[list[Offer], int]:
    """Offers for the query, sorted by departure, with the total number of offers."""
    party = PartySize(q.adults, q.children, q.infants)
    party.check(max_passengers=max_passengers)
    if q.origin == q.destination:
        raise InvalidRequest("origin and destination must differ")
    zones = dict(
        (await conn.execute(sa.select(ap.iata, ap.time_zone).where(ap.iata.in_([q.origin, q.destination])))).all()
    )
    missing = [c for c in (q.origin, q.destination) if c not in zones]
    if missing:
        raise UnknownAirport(f"unknown airport: {', '.join(missing)}", airports=missing)
    if q.departure_date < now.astimezone(ZoneInfo(zones[q.origin])).date():
        raise DateInPast("departure_date is in the past")
    if q.return_date is not None and q.return_date < q.departure_date:
        raise InvalidRequest("return_date is before departure_date")

    outbound = await _options(conn, q.origin, q.destination, q.departure_date, q.cabin, party, now, zones)
    if q.return_date is None:
        offers = [_offer([o], party) for o in outbound]
    else:
        inbound = await _options(conn, q.destination, q.origin, q.return_date, q.cabin, party, now, zones)
        offers = [_offer([o, i], party) for o in outbound for i in inbound if i.departure_at > o.arrival_at]
    offers.sort(key=lambda o: ([s.departure_at for s in o.segments], o.total.amount))
    start = (q.page - 1) * q.page_size
    return offers[start : start + q.page_size], len(offers)


async def _options(
    conn: AsyncConnection,
    origin: str,
    destination: str,
    day: date,
    cabin: str,
    party: PartySize,
    now: datetime,
    zones: dict[str, str],
) -> list[OfferSegment]:
    rows = await conn.execute(
        _options_stmt,
        {
            "origin": origin,
            "destination": destination,
            "day": day,
            "now": now,
            "cabin": cabin,
            "seats": party.seats,
        },
    )
    cheapest: dict[Any, Any] = {}
    for r in rows:
        best = cheapest.get(r.id)
        if best is None or (r.fare_amount, r.code) < (best.fare_amount, best.code):
            cheapest[r.id] = r
    return [
        OfferSegment(
            flight_id=r.id,
            designator=f"{r.carrier}{r.flight_number}",
            origin=r.origin,
            destination=r.destination,
            departure_at=r.departure_at,
            arrival_at=r.arrival_at,
            departure_local=r.departure_at.astimezone(ZoneInfo(zones[r.origin])),
            arrival_local=r.arrival_at.astimezone(ZoneInfo(zones[r.destination])),
            aircraft=r.aircraft_code,
            cabin=cabin,
            booking_class=r.code,
            fare=Money(amount=r.fare_amount, currency=r.currency),
            seats_left=min(r.class_left, r.cabin_left),
        )
        for r in cheapest.values()
    ]


def _offer(segments: list[OfferSegment], party: PartySize) -> Offer:
    return Offer(
        segments=segments,
        total=Money(
            amount=sum(party.price(s.fare.amount) for s in segments),
            currency=segments[0].fare.currency,
        ),
        seats_left=min(s.seats_left for s in segments),
    )

"""Flight search over the inventory tables: direct flights, one-way and round trip.

A search is assembled from *legs*: every fare row of one (origin, destination, local date,
cabin). A leg does not depend on the party, the page or the clock, so it is what the search
cache keeps (see ``skybook.search.cache``); the party's seat count, the departure-time cut-off,
the cheapest class per flight, prices, sorting and paging are applied per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
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

_leg_stmt = (
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
        cab.cabin_code == sa.bindparam("cabin"),
        bc.is_open.is_(True),
    )
    .order_by(f.departure_at, f.id, bc.code)
)

Leg = list[dict[str, Any]]
"""The open fare rows of one route, local date and cabin, JSON-ready (ids and times as strings)."""


async def load_leg(conn: AsyncConnection, origin: str, destination: str, day: date, cabin: str) -> Leg:
    """Read one leg from the database (what a cache miss costs)."""
    rows = await conn.execute(_leg_stmt, {"origin": origin, "destination": destination, "day": day, "cabin": cabin})
    return [
        {
            "flight_id": str(r.id),
            "designator": f"{r.carrier}{r.flight_number}",
            "origin": r.origin,
            "destination": r.destination,
            "departure_at": r.departure_at.isoformat(),
            "arrival_at": r.arrival_at.isoformat(),
            "aircraft": r.aircraft_code,
            "code": r.code,
            "fare_amount": r.fare_amount,
            "currency": r.currency,
            "seats_left": min(r.class_left, r.cabin_left),
        }
        for r in rows
    ]


async def load_zones(conn: AsyncConnection, iatas: Sequence[str]) -> dict[str, str]:
    """Time zones of the given airports that exist."""
    return dict((await conn.execute(sa.select(ap.iata, ap.time_zone).where(ap.iata.in_(list(iatas))))).all())


ZoneSource = Callable[[Sequence[str]], Awaitable[dict[str, str]]]
LegSource = Callable[[str, str, date, str], Awaitable[Leg]]


def direct(conn: AsyncConnection) -> tuple[ZoneSource, LegSource]:
    """Sources reading straight from the database (no cache)."""
    return (lambda iatas: load_zones(conn, iatas)), (lambda o, d, day, cabin: load_leg(conn, o, d, day, cabin))


async def search(
    q: SearchQuery, *, zones: ZoneSource, legs: LegSource, now: datetime, max_passengers: int
) -> tuple[list[Offer], int]:
    """Offers for the query, sorted by departure, with the total number of offers."""
    party = PartySize(q.adults, q.children, q.infants)
    party.check(max_passengers=max_passengers)
    if q.origin == q.destination:
        raise InvalidRequest("origin and destination must differ")
    known = await zones([q.origin, q.destination])
    missing = [c for c in (q.origin, q.destination) if c not in known]
    if missing:
        raise UnknownAirport(f"unknown airport: {', '.join(missing)}", airports=missing)
    if q.departure_date < now.astimezone(ZoneInfo(known[q.origin])).date():
        raise DateInPast("departure_date is in the past")
    if q.return_date is not None and q.return_date < q.departure_date:
        raise InvalidRequest("return_date is before departure_date")

    outbound = _options(await legs(q.origin, q.destination, q.departure_date, q.cabin), q.cabin, party, now, known)
    if q.return_date is None:
        offers = [_offer([o], party) for o in outbound]
    else:
        back = await legs(q.destination, q.origin, q.return_date, q.cabin)
        inbound = _options(back, q.cabin, party, now, known)
        offers = [_offer([o, i], party) for o in outbound for i in inbound if i.departure_at > o.arrival_at]
    offers.sort(key=lambda o: ([s.departure_at for s in o.segments], o.total.amount))
    start = (q.page - 1) * q.page_size
    return offers[start : start + q.page_size], len(offers)


def _options(leg: Leg, cabin: str, party: PartySize, now: datetime, zones: dict[str, str]) -> list[OfferSegment]:
    """The cheapest class with room for the party on every flight of the leg not yet departed."""
    cheapest: dict[str, tuple[dict[str, Any], datetime, datetime]] = {}
    for r in leg:
        if r["seats_left"] < party.seats:
            continue
        departure_at = datetime.fromisoformat(r["departure_at"])
        if departure_at <= now:
            continue
        best = cheapest.get(r["flight_id"])
        if best is None or (r["fare_amount"], r["code"]) < (best[0]["fare_amount"], best[0]["code"]):
            cheapest[r["flight_id"]] = (r, departure_at, datetime.fromisoformat(r["arrival_at"]))
    return [
        OfferSegment(
            flight_id=r["flight_id"],
            designator=r["designator"],
            origin=r["origin"],
            destination=r["destination"],
            departure_at=dep,
            arrival_at=arr,
            departure_local=dep.astimezone(ZoneInfo(zones[r["origin"]])),
            arrival_local=arr.astimezone(ZoneInfo(zones[r["destination"]])),
            aircraft=r["aircraft"],
            cabin=cabin,
            booking_class=r["code"],
            fare=Money(amount=r["fare_amount"], currency=r["currency"]),
            seats_left=r["seats_left"],
        )
        for r, dep, arr in cheapest.values()
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

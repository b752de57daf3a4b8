"""Inventory use cases: airports, aircraft, flights, schedules and fares."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from skybook.inventory import repository as repo
from skybook.inventory.model import (
    DatedFlight,
    FareSpec,
    SeatMap,
    check_fares,
    expand_schedule_line,
)
from skybook.inventory.schemas import (
    AircraftTypeCreate,
    AirportCreate,
    BookingClassUpdate,
    FareInput,
    FlightCreate,
    ScheduleImport,
    ScheduleImportResult,
)
from skybook.inventory.tables import aircraft_types, airports, booking_classes, flights
from skybook.platform.clock import Clock
from skybook.platform.errors import Conflict, DateInPast, InvalidRequest, NotFound
from skybook.platform.events import Event
from skybook.platform.uow import UnitOfWork


async def create_airport(cmd: AirportCreate, uow: UnitOfWork) -> None:
    """Add an airport to the network."""
    async with uow:
        exists = await uow.conn.scalar(sa.select(airports.c.iata).where(airports.c.iata == cmd.iata))
        if exists:
            raise Conflict(f"airport {cmd.iata} already exists")
        await uow.conn.execute(sa.insert(airports).values(**cmd.model_dump()))
        await uow.commit()


async def create_aircraft_type(cmd: AircraftTypeCreate, uow: UnitOfWork) -> SeatMap:
    """Register an aircraft type with its seat map."""
    seat_map = repo.seat_map_from_json([c.model_dump() for c in cmd.cabins])
    async with uow:
        exists = await uow.conn.scalar(sa.select(aircraft_types.c.code).where(aircraft_types.c.code == cmd.code))
        if exists:
            raise Conflict(f"aircraft type {cmd.code} already exists")
        await uow.conn.execute(
            sa.insert(aircraft_types).values(
                code=cmd.code, name=cmd.name, seat_map=[c.model_dump() for c in cmd.cabins]
            )
        )
        await uow.commit()
    return seat_map


def _fare_specs(fares: Sequence[FareInput]) -> list[FareSpec]:
    return [FareSpec(f.booking_class, f.cabin, f.amount, f.currency, f.seat_limit) for f in fares]


async def create_flight(cmd: FlightCreate, uow: UnitOfWork, *, clock: Clock) -> uuid.UUID:
    """Publish one dated flight with its cabins and booking classes."""
    now = clock.now()
    if cmd.origin == cmd.destination:
        raise InvalidRequest("origin and destination must differ")
    if cmd.departure_at <= now:
        raise DateInPast("departure_at is in the past")
    if cmd.arrival_at <= cmd.departure_at:
        raise InvalidRequest("arrival_at must be after departure_at")
    fares = _fare_specs(cmd.fares)
    async with uow:
        zones = await repo.airport_zones(uow.conn, {cmd.origin, cmd.destination})
        seat_map = await repo.get_seat_map(uow.conn, cmd.aircraft)
        capacity = seat_map.capacity_by_cabin()
        check_fares(fares, capacity)
        local_date = cmd.departure_at.astimezone(ZoneInfo(zones[cmd.origin])).date()
        taken = await repo.existing_flight_keys(uow.conn, cmd.carrier, [cmd.flight_number], local_date, local_date)
        if taken:
            raise Conflict(f"{cmd.carrier}{cmd.flight_number} already operates on {local_date}")
        dated = DatedFlight(
            cmd.carrier,
            cmd.flight_number,
            local_date,
            cmd.origin,
            cmd.destination,
            cmd.departure_at,
            cmd.arrival_at,
            cmd.aircraft,
        )
        overbooking = {str(k): v for k, v in cmd.overbooking.items()}
        (flight_id,) = await repo.insert_flights(uow.conn, [(dated, fares, capacity, overbooking)], now=now)
        uow.emit(
            Event(
                type="flight.scheduled",
                aggregate_id=str(flight_id),
                data={
                    "flight_id": str(flight_id),
                    "designator": f"{cmd.carrier}{cmd.flight_number}",
                    "departure_date": local_date.isoformat(),
                },
            )
        )
        await uow.commit()
    return flight_id


async def import_schedule(cmd: ScheduleImport, uow: UnitOfWork, *, clock: Clock) -> ScheduleImportResult:
    """Create the dated flights of a schedule; flights that already exist are left as they are."""
    today = clock.now().date()
    async with uow:
        zones = await repo.airport_zones(uow.conn, {c for line in cmd.flights for c in (line.origin, line.destination)})
        seat_maps: dict[str, SeatMap] = {}
        for code in {line.aircraft for line in cmd.flights}:
            seat_maps[code] = await repo.get_seat_map(uow.conn, code)
        planned: list[tuple[DatedFlight, Sequence[FareSpec], dict[str, int], dict[str, int]]] = []
        first, last = date.max, date.min
        for line in cmd.flights:
            if line.origin == line.destination:
                raise InvalidRequest(f"flight {line.flight_number}: origin and destination must differ")
            start = max(line.period_start or cmd.period_start, today + timedelta(days=1))
            end = line.period_end or cmd.period_end
            fares = _fare_specs(line.fares)
            capacity = seat_maps[line.aircraft].capacity_by_cabin()
            check_fares(fares, capacity)
            if end < start:
                continue
            for dated in expand_schedule_line(
                carrier=cmd.carrier,
                flight_number=line.flight_number,
                origin=line.origin,
                destination=line.destination,
                origin_zone=zones[line.origin],
                destination_zone=zones[line.destination],
                departure_time=line.departure_time,
                arrival_time=line.arrival_time,
                arrival_day_offset=line.arrival_day_offset,
                days_of_week=line.days_of_week,
                period_start=start,
                period_end=end,
                aircraft=line.aircraft,
            ):
                planned.append((dated, fares, capacity, {}))
                first, last = min(first, dated.departure_date), max(last, dated.departure_date)
        keys = [(d.flight_number, d.departure_date) for d, *_ in planned]
        if len(set(keys)) != len(keys):
            raise InvalidRequest("the schedule lists the same flight number twice on one date")
        existing: set[tuple[str, date]] = set()
        if planned:
            existing = await repo.existing_flight_keys(uow.conn, cmd.carrier, {k[0] for k in keys}, first, last)
        fresh = [p for p in planned if (p[0].flight_number, p[0].departure_date) not in existing]
        created = await repo.insert_flights(uow.conn, fresh, now=clock.now())
        if created:
            uow.emit(
                Event(
                    type="schedule.imported",
                    aggregate_id=cmd.carrier,
                    data={
                        "carrier": cmd.carrier,
                        "flights_created": len(created),
                        "period_start": cmd.period_start.isoformat(),
                        "period_end": cmd.period_end.isoformat(),
                    },
                )
            )
        await uow.commit()
    return ScheduleImportResult(created=len(created), existing=len(planned) - len(fresh))


async def update_booking_class(flight_id: uuid.UUID, code: str, cmd: BookingClassUpdate, uow: UnitOfWork) -> None:
    """Change the fare, seat limit or sale status of one booking class."""
    values = cmd.model_dump(exclude_none=True)
    if not values:
        raise InvalidRequest("nothing to change")
    if "amount" in values:
        values["fare_amount"] = values.pop("amount")
    async with uow:
        result = await uow.conn.execute(
            sa.update(booking_classes)
            .where(booking_classes.c.flight_id == flight_id, booking_classes.c.code == code)
            .values(**values)
        )
        if not result.rowcount:
            raise NotFound(f"flight {flight_id} has no booking class {code}")
        uow.emit(
            Event(
                type="inventory.changed",
                aggregate_id=str(flight_id),
                data={"flight_ids": [str(flight_id)], "reason": "fare_update"},
            )
        )
        await uow.commit()


async def cancel_flight(flight_id: uuid.UUID, uow: UnitOfWork) -> None:
    """Take a flight off sale (status cancelled); existing orders keep their seats for re-accommodation."""
    async with uow:
        result = await uow.conn.execute(
            sa.update(flights)
            .where(flights.c.id == flight_id, flights.c.status == "scheduled")
            .values(status="cancelled")
        )
        if not result.rowcount:
            raise NotFound(f"flight {flight_id} does not exist or is already cancelled")
        uow.emit(
            Event(
                type="flight.cancelled",
                aggregate_id=str(flight_id),
                data={"flight_id": str(flight_id)},
            )
        )
        await uow.commit()

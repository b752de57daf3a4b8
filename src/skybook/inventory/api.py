"""HTTP routes of the inventory context (airline staff: network, aircraft, flights, fares)."""

from __future__ import annotations

import uuid
from typing import Annotated
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.inventory import handlers
from skybook.inventory.repository import load_flights, seat_map_from_json
from skybook.inventory.schemas import (
    AircraftTypeCreate,
    AircraftTypePage,
    AircraftTypeRead,
    AirportCreate,
    AirportPage,
    AirportRead,
    BookingClassRead,
    BookingClassUpdate,
    CabinLayoutSchema,
    CabinRead,
    FlightCreate,
    FlightPage,
    FlightRead,
    ScheduleImport,
    ScheduleImportResult,
)
from skybook.inventory.tables import aircraft_types, airports, flights
from skybook.platform.deps import ContainerDep, OperatorPrincipal, ReadConn
from skybook.platform.errors import NotFound
from skybook.platform.http import Paging, error_responses
from skybook.platform.schemas import IsoDate, Money, PageInfo

router = APIRouter(prefix="/v1")
IATA = Annotated[str, Path(pattern=r"^[A-Z]{3}$", description="IATA airport code.")]
FlightId = Annotated[uuid.UUID, Path(description="Flight id.")]


@router.get(
    "/airports",
    tags=["Network"],
    operation_id="listAirports",
    summary="List airports",
    response_model=AirportPage,
    responses=error_responses(422),
)
async def list_airports(conn: ReadConn, paging: Annotated[Paging, Depends()]) -> AirportPage:
    """Airports of the network, by IATA code."""
    rows, page_info = await paging.fetch(conn, airports, where=[], order_by=[airports.c.iata])
    return AirportPage(items=[AirportRead.model_validate(r) for r in rows], page_info=page_info)


@router.get(
    "/airports/{iata}",
    tags=["Network"],
    operation_id="getAirport",
    summary="Get an airport",
    response_model=AirportRead,
    responses=error_responses(404, 422),
)
async def get_airport(iata: IATA, conn: ReadConn) -> AirportRead:
    """One airport by IATA code."""
    row = (await conn.execute(sa.select(airports).where(airports.c.iata == iata))).first()
    if row is None:
        raise NotFound(f"airport {iata} does not exist")
    return AirportRead.model_validate(row)


@router.post(
    "/airports",
    tags=["Network"],
    operation_id="createAirport",
    summary="Add an airport",
    status_code=status.HTTP_201_CREATED,
    response_model=AirportRead,
    responses=error_responses(400, 403, 409, 413, 415, 422),
)
async def create_airport(
    _staff: OperatorPrincipal, body: AirportCreate, container: ContainerDep, response: Response
) -> AirportRead:
    """Add an airport to the network (airline staff)."""
    await handlers.create_airport(body, container.uow())
    response.headers["Location"] = f"/v1/airports/{body.iata}"
    return AirportRead(**body.model_dump())


def _aircraft_read(row: sa.Row) -> AircraftTypeRead:  # type: ignore[type-arg]
    seat_map = seat_map_from_json(row.seat_map)
    return AircraftTypeRead(
        code=row.code,
        name=row.name,
        cabins=[CabinLayoutSchema(**c) for c in row.seat_map],
        capacity=seat_map.capacity_by_cabin(),
    )


@router.get(
    "/aircraft-types",
    tags=["Network"],
    operation_id="listAircraftTypes",
    summary="List aircraft types",
    response_model=AircraftTypePage,
    responses=error_responses(422),
)
async def list_aircraft_types(conn: ReadConn, paging: Annotated[Paging, Depends()]) -> AircraftTypePage:
    """Aircraft types with their seat maps."""
    rows, page_info = await paging.fetch(conn, aircraft_types, where=[], order_by=[aircraft_types.c.code])
    return AircraftTypePage(items=[_aircraft_read(r) for r in rows], page_info=page_info)


@router.get(
    "/aircraft-types/{code}",
    tags=["Network"],
    operation_id="getAircraftType",
    summary="Get an aircraft type",
    response_model=AircraftTypeRead,
    responses=error_responses(404, 422),
)
async def get_aircraft_type(
    code: Annotated[str, Path(pattern=r"^[A-Z0-9]{2,8}$", description="Aircraft type code.")],
    conn: ReadConn,
) -> AircraftTypeRead:
    """One aircraft type and its seat map."""
    row = (await conn.execute(sa.select(aircraft_types).where(aircraft_types.c.code == code))).first()
    if row is None:
        raise NotFound(f"aircraft type {code} does not exist")
    return _aircraft_read(row)


@router.post(
    "/aircraft-types",
    tags=["Network"],
    operation_id="createAircraftType",
    summary="Add an aircraft type",
    status_code=status.HTTP_201_CREATED,
    response_model=AircraftTypeRead,
    responses=error_responses(400, 403, 409, 413, 415, 422),
)
async def create_aircraft_type(
    _staff: OperatorPrincipal, body: AircraftTypeCreate, container: ContainerDep
) -> AircraftTypeRead:
    """Register an aircraft type and its seat map (airline staff)."""
    seat_map = await handlers.create_aircraft_type(body, container.uow())
    return AircraftTypeRead(code=body.code, name=body.name, cabins=body.cabins, capacity=seat_map.capacity_by_cabin())


def flight_read(f: dict) -> FlightRead:  # type: ignore[type-arg]
    """Shape a loaded flight into the API schema."""
    return FlightRead(
        id=f["id"],
        carrier=f["carrier"],
        flight_number=f["flight_number"],
        designator=f"{f['carrier']}{f['flight_number']}",
        departure_date=f["departure_date"],
        origin=f["origin"],
        destination=f["destination"],
        departure_at=f["departure_at"],
        arrival_at=f["arrival_at"],
        departure_local=f["departure_at"].astimezone(ZoneInfo(f["origin_zone"])),
        arrival_local=f["arrival_at"].astimezone(ZoneInfo(f["destination_zone"])),
        aircraft=f["aircraft_code"],
        status=f["status"],
        cabins=[
            CabinRead(
                cabin=c["cabin_code"],
                capacity=c["capacity"],
                overbooking_limit=c["overbooking_limit"],
                held=c["held"],
                sold=c["sold"],
                seats_available=c["capacity"] + c["overbooking_limit"] - c["held"] - c["sold"],
                booking_classes=[
                    BookingClassRead(
                        code=b["code"],
                        fare=Money(amount=b["fare_amount"], currency=b["currency"]),
                        seat_limit=b["seat_limit"],
                        held=b["held"],
                        sold=b["sold"],
                        is_open=b["is_open"],
                        seats_available=max(
                            0,
                            min(
                                b["seat_limit"] - b["held"] - b["sold"],
                                c["capacity"] + c["overbooking_limit"] - c["held"] - c["sold"],
                            ),
                        )
                        if b["is_open"]
                        else 0,
                    )
                    for b in c["booking_classes"]
                ],
            )
            for c in f["cabins"]
        ],
    )


async def _one_flight(conn: AsyncConnection, flight_id: uuid.UUID) -> FlightRead:
    items, _ = await load_flights(conn, [flights.c.id == flight_id])
    if not items:
        raise NotFound(f"flight {flight_id} does not exist")
    return flight_read(items[0])


@router.get(
    "/flights",
    tags=["Flights"],
    operation_id="listFlights",
    summary="List flights",
    response_model=FlightPage,
    responses=error_responses(422),
)
async def list_flights(
    conn: ReadConn,
    paging: Annotated[Paging, Depends()],
    origin: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$", description="Origin airport.")] = None,
    destination: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$", description="Destination airport.")] = None,
    departure_date: Annotated[IsoDate | None, Query(description="Local departure date.")] = None,
    flight_status: Annotated[
        str | None,
        Query(alias="status", pattern="^(scheduled|cancelled)$", description="Flight status."),
    ] = None,
) -> FlightPage:
    """Dated flights with their seat counts (airline staff watching loads)."""
    where: list[sa.ColumnElement[bool]] = []
    if origin:
        where.append(flights.c.origin == origin)
    if destination:
        where.append(flights.c.destination == destination)
    if departure_date:
        where.append(flights.c.departure_date == departure_date)
    if flight_status:
        where.append(flights.c.status == flight_status)
    items, total = await load_flights(conn, where, offset=paging.offset, limit=paging.page_size)
    return FlightPage(
        items=[flight_read(f) for f in items],
        page_info=PageInfo(page=paging.page, page_size=paging.page_size, total=total),
    )


@router.get(
    "/flights/{flight_id}",
    tags=["Flights"],
    operation_id="getFlight",
    summary="Get a flight",
    response_model=FlightRead,
    responses=error_responses(404, 422),
)
async def get_flight(flight_id: FlightId, conn: ReadConn) -> FlightRead:
    """One flight with its cabins, booking classes and seat counts."""
    return await _one_flight(conn, flight_id)


@router.post(
    "/flights",
    tags=["Flights"],
    operation_id="createFlight",
    summary="Publish a flight",
    status_code=status.HTTP_201_CREATED,
    response_model=FlightRead,
    responses=error_responses(400, 403, 404, 409, 413, 415, 422),
)
async def create_flight(
    _staff: OperatorPrincipal, body: FlightCreate, container: ContainerDep, response: Response
) -> FlightRead:
    """Publish one dated flight with its booking classes (airline staff)."""
    flight_id = await handlers.create_flight(body, container.uow(), clock=container.clock)
    response.headers["Location"] = f"/v1/flights/{flight_id}"
    async with container.engine.connect() as conn:
        return await _one_flight(conn, flight_id)


@router.post(
    "/flights/{flight_id}/cancel",
    tags=["Flights"],
    operation_id="cancelFlight",
    summary="Cancel a flight",
    response_model=FlightRead,
    responses=error_responses(400, 403, 404, 413, 422),
)
async def cancel_flight(_staff: OperatorPrincipal, flight_id: FlightId, container: ContainerDep) -> FlightRead:
    """Take a flight off sale; booked passengers keep their seats for re-accommodation."""
    await handlers.cancel_flight(flight_id, container.uow())
    async with container.engine.connect() as conn:
        return await _one_flight(conn, flight_id)


@router.patch(
    "/flights/{flight_id}/booking-classes/{code}",
    tags=["Flights"],
    operation_id="updateBookingClass",
    summary="Set a fare or limit",
    response_model=FlightRead,
    responses=error_responses(400, 403, 404, 413, 415, 422),
)
async def update_booking_class(
    _staff: OperatorPrincipal,
    flight_id: FlightId,
    code: Annotated[str, Path(pattern=r"^[A-Z]$", description="Booking class letter.")],
    body: BookingClassUpdate,
    container: ContainerDep,
) -> FlightRead:
    """Change a booking class's fare, seat limit or sale status (airline staff)."""
    await handlers.update_booking_class(flight_id, code, body, container.uow())
    async with container.engine.connect() as conn:
        return await _one_flight(conn, flight_id)


@router.post(
    "/schedules/import",
    tags=["Flights"],
    operation_id="importSchedule",
    summary="Import a schedule",
    response_model=ScheduleImportResult,
    responses=error_responses(400, 403, 404, 409, 413, 415, 422),
)
async def import_schedule(
    _staff: OperatorPrincipal, body: ScheduleImport, container: ContainerDep
) -> ScheduleImportResult:
    """Create the dated flights of a schedule; importing it again creates nothing new."""
    return await handlers.import_schedule(body, container.uow(), clock=container.clock)

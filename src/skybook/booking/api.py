"""HTTP routes of the booking context: holds, orders, payment, seats, cancellation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response, status
from starlette.exceptions import HTTPException

from skybook.booking import handlers, queries
from skybook.booking import repository as repo
from skybook.booking.commands import (
    AssignSeats,
    CancelOrder,
    ConfirmOrder,
    HoldSeats,
    PayOrder,
    ReleaseHold,
    SeatRequest,
    SegmentChoice,
)
from skybook.booking.model import PartySize, PassengerDetails, PassengerType
from skybook.booking.schemas import (
    HoldCreate,
    OrderCreate,
    OrderLookup,
    OrderPage,
    OrderRead,
    PaymentCreate,
    SeatAssignmentCreate,
    SeatMapRead,
    to_order_read,
)
from skybook.bootstrap import Container
from skybook.payments import Card, luhn_valid
from skybook.platform.deps import BookingReader, BookingWriter, ContainerDep, ReadConn
from skybook.platform.errors import InvalidRequest
from skybook.platform.http import Paging, error_responses
from skybook.platform.schemas import IsoDate, PageInfo
from skybook.platform.security import Principal

router = APIRouter(prefix="/v1")
OrderId = Annotated[uuid.UUID, Path(description="Order (or hold) id.")]
WRITE_ERRORS = (400, 403, 404, 409, 413, 415, 422, 503)


def _json(order: OrderRead, status_code: int = status.HTTP_200_OK, location: str | None = None) -> Response:
    """The order as JSON, serialised once by pydantic-core.

    Returning the model instead would make FastAPI validate it a second time against the route's
    ``response_model`` and encode it through Python dicts; the hot booking steps skip that (the
    ``response_model`` still documents the body in OpenAPI).
    """
    headers = {"Location": location} if location else None
    return Response(order.model_dump_json(), status_code=status_code, media_type="application/json", headers=headers)


async def _read(container: Container, order_id: uuid.UUID, actor: Principal) -> OrderRead:
    async with container.engine.connect() as conn:
        return to_order_read(await queries.order_view(conn, order_id, actor))


@router.post(
    "/holds",
    tags=["Booking"],
    operation_id="createHold",
    summary="Hold seats",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    responses=error_responses(*WRITE_ERRORS),
)
async def create_hold(body: HoldCreate, principal: BookingWriter, container: ContainerDep) -> Response:
    """Hold seats for a party on every segment at once, until the ticketing deadline (``expires_at``)."""
    cmd = HoldSeats(
        segments=tuple(SegmentChoice(s.flight_id, s.booking_class) for s in body.segments),
        party=PartySize(body.passengers.adults, body.passengers.children, body.passengers.infants),
        actor=principal,
    )
    hold = await handlers.hold_seats(cmd, container)
    # Built from what the hold's own statements returned: no second transaction to read it back.
    return _json(to_order_read(queries.held_order_view(hold)), status.HTTP_201_CREATED, f"/v1/holds/{hold.id}")


@router.get(
    "/holds/{order_id}",
    tags=["Booking"],
    operation_id="getHold",
    summary="Get a hold",
    response_model=OrderRead,
    responses=error_responses(403, 404, 422),
)
async def get_hold(order_id: OrderId, principal: BookingReader, conn: ReadConn) -> OrderRead:
    """A hold (the order in its ``held`` state, or whatever it became)."""
    return to_order_read(await queries.order_view(conn, order_id, principal))


@router.post(
    "/holds/{order_id}/release",
    tags=["Booking"],
    operation_id="releaseHold",
    summary="Release a hold",
    response_model=OrderRead,
    responses=error_responses(*WRITE_ERRORS),
)
async def release_hold(order_id: OrderId, principal: BookingWriter, container: ContainerDep) -> OrderRead:
    """Give the held seats back now instead of at expiry."""
    await handlers.release_hold(ReleaseHold(order_id, actor=principal), container)
    return await _read(container, order_id, principal)


@router.post(
    "/orders",
    tags=["Booking"],
    operation_id="createOrder",
    summary="Confirm a hold into an order",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    responses=error_responses(*WRITE_ERRORS),
)
async def create_order(body: OrderCreate, principal: BookingWriter, container: ContainerDep) -> Response:
    """Name the passengers of a hold; the order gets its record locator and awaits payment."""
    cmd = ConfirmOrder(
        order_id=body.hold_id,
        passengers=tuple(
            PassengerDetails(PassengerType(p.type), p.given_name, p.family_name, p.date_of_birth)
            for p in body.passengers
        ),
        contact_email=str(body.contact.email),
        contact_phone=body.contact.phone,
        actor=principal,
    )
    await handlers.confirm_order(cmd, container)
    order = await _read(container, body.hold_id, principal)
    return _json(order, status.HTTP_201_CREATED, f"/v1/orders/{body.hold_id}")


@router.get(
    "/orders",
    tags=["Booking"],
    operation_id="listOrders",
    summary="List orders",
    response_model=OrderPage,
    responses=error_responses(403, 422),
)
async def list_orders(
    principal: BookingReader,
    conn: ReadConn,
    paging: Annotated[Paging, Depends()],
    order_status: Annotated[
        Literal["held", "confirmed", "ticketed", "cancelled", "expired"] | None,
        Query(alias="status", description="Only orders in this status."),
    ] = None,
    created_from: Annotated[IsoDate | None, Query(description="Created on or after this UTC date.")] = None,
    created_to: Annotated[IsoDate | None, Query(description="Created on or before this UTC date.")] = None,
    flight_id: Annotated[uuid.UUID | None, Query(description="Only orders on this flight.")] = None,
) -> OrderPage:
    """Orders, newest first."""
    items, total = await queries.list_orders(
        conn,
        status=order_status,
        created_from=created_from,
        created_to=created_to,
        flight_id=flight_id,
        offset=paging.offset,
        limit=paging.page_size,
        actor=principal,
    )
    return OrderPage(
        items=[to_order_read(v) for v in items],
        page_info=PageInfo(page=paging.page, page_size=paging.page_size, total=total),
    )


@router.api_route("/orders/lookup", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def lookup_order_other_methods() -> None:
    """``/orders/lookup`` is a resource of its own, not an order id: other methods than POST answer 405."""
    raise HTTPException(status.HTTP_405_METHOD_NOT_ALLOWED, headers={"Allow": "POST"})


@router.get(
    "/orders/{order_id}",
    tags=["Booking"],
    operation_id="getOrder",
    summary="Get an order",
    response_model=OrderRead,
    responses=error_responses(403, 404, 422),
)
async def get_order(order_id: OrderId, principal: BookingReader, conn: ReadConn) -> OrderRead:
    """One order with its segments, passengers, seats and e-tickets."""
    return to_order_read(await queries.order_view(conn, order_id, principal))


@router.post(
    "/orders/lookup",
    tags=["Booking"],
    operation_id="lookupOrder",
    summary="Manage my booking",
    response_model=OrderRead,
    responses=error_responses(400, 403, 404, 413, 415, 422),
)
async def lookup_order(body: OrderLookup, principal: BookingReader, conn: ReadConn) -> OrderRead:
    """Find a booking by record locator and a passenger's family name (sent in the body, not the URL)."""
    return to_order_read(await queries.find_by_locator(conn, body.record_locator, body.family_name, principal))


PAY_ACCEPTED = (
    "The payment was captured but the e-tickets were not issued within the wait "
    "(`SKYBOOK_TICKETING_WAIT_SECONDS`): the order is `confirmed` with `payment_status` `captured`, "
    "the tickets follow shortly. Poll the order at `Location` until it is `ticketed`; it will not expire meanwhile."
)


@router.post(
    "/orders/{order_id}/payments",
    tags=["Booking"],
    operation_id="payOrder",
    summary="Pay and issue e-tickets",
    response_model=OrderRead,
    responses={
        200: {"description": "Paid and ticketed: the order with one e-ticket per passenger."},
        202: {
            "model": OrderRead,
            "description": PAY_ACCEPTED,
            "headers": {"Location": {"description": "The order to poll.", "schema": {"type": "string"}}},
        },
        **error_responses(*WRITE_ERRORS, 402, 502),
    },
)
async def pay_order(
    order_id: OrderId, body: PaymentCreate, principal: BookingWriter, container: ContainerDep
) -> Response:
    """Authorise and capture the total; one 13-digit e-ticket is then issued per passenger.

    Tickets are issued by the ticketing worker once the capture is recorded. The answer waits a
    few seconds for them (holding no lock or connection meanwhile): ``200`` with the tickets, or
    ``202 Accepted`` with the paid, not yet ticketed order and a ``Location`` to poll.
    """
    card = body.card
    if not luhn_valid(card.number):
        raise InvalidRequest("the card number is not valid")
    today = container.clock.now().date()
    if (card.exp_year, card.exp_month) < (today.year, today.month):
        raise InvalidRequest("the card has expired")
    await handlers.pay_order(
        PayOrder(order_id, Card(card.number, card.exp_month, card.exp_year, card.cvc, card.holder), actor=principal),
        container,
    )
    order = await _await_tickets(container, order_id, principal)
    if order.status != "ticketed":
        return _json(order, status.HTTP_202_ACCEPTED, f"/v1/orders/{order_id}")
    return _json(order)


async def _await_tickets(container: Container, order_id: uuid.UUID, actor: Principal) -> OrderRead:
    """The order once ticketed, or as it is when the wait is over (real time: the clock may be fake).

    The ticketing consumer announces the order when its transaction commits (PostgreSQL NOTIFY,
    heard by this process's one listening connection), so a waiting request sleeps instead of
    polling: between announcements it re-reads only the order's status, one indexed SELECT, at a
    slow fallback pace in case an announcement was lost. Without announcements (SQLite) it polls
    with a growing step.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + container.ticketing_wait
    step = 0.005
    with container.order_signals.listen(str(order_id)) as ticketed:
        while True:
            await container.let_consumers_run(0)
            async with container.engine.connect() as conn:
                current = await repo.status_of(conn, order_id)
            left = deadline - loop.time()
            if current != "confirmed" or left <= 0:
                break
            if container.order_signals.live:
                await ticketed.wait(min(left, _ANNOUNCEMENT_FALLBACK_S))
            else:
                await ticketed.wait(min(step, left))
                step = min(step * 2, 0.1)
    return await _read(container, order_id, actor)


# How long a waiting pay request trusts the announcement before it re-reads the status anyway.
_ANNOUNCEMENT_FALLBACK_S = 0.5


@router.post(
    "/orders/{order_id}/seats",
    tags=["Booking"],
    operation_id="assignSeats",
    summary="Choose seats",
    response_model=OrderRead,
    responses=error_responses(*WRITE_ERRORS),
)
async def assign_seats(
    order_id: OrderId, body: SeatAssignmentCreate, principal: BookingWriter, container: ContainerDep
) -> OrderRead:
    """Give passengers specific seats in their booked cabin; a taken seat answers ``seat_unavailable``."""
    cmd = AssignSeats(
        order_id, tuple(SeatRequest(s.passenger_id, s.flight_id, s.seat) for s in body.seats), actor=principal
    )
    await handlers.assign_seats(cmd, container)
    return await _read(container, order_id, principal)


@router.post(
    "/orders/{order_id}/cancel",
    tags=["Booking"],
    operation_id="cancelOrder",
    summary="Cancel an order",
    response_model=OrderRead,
    responses=error_responses(*WRITE_ERRORS, 502),
)
async def cancel_order(order_id: OrderId, principal: BookingWriter, container: ContainerDep) -> OrderRead:
    """Cancel; a ticketed order is voided on its day of issue, refunded after; the seats are released."""
    await handlers.cancel_order(CancelOrder(order_id, actor=principal), container)
    return await _read(container, order_id, principal)


@router.get(
    "/flights/{flight_id}/seat-map",
    tags=["Flights"],
    operation_id="getSeatMap",
    summary="Get a seat map",
    response_model=SeatMapRead,
    responses=error_responses(403, 404, 422),
)
async def get_seat_map(
    _principal: BookingReader,
    flight_id: Annotated[uuid.UUID, Path(description="Flight id.")],
    container: ContainerDep,
) -> Response:
    """The flight's seats with window/aisle/exit attributes and availability.

    Availability may come from the seat-map cache, as of the last seat change it has been told
    about; choosing a seat always checks the database itself.
    """
    # Cached as the finished body (built from SeatMapRead on a miss), so a hit is not re-validated.
    return Response(await container.seat_maps.json(flight_id), media_type="application/json")

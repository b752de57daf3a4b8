"""Events of the booking context (holds, orders, seats), version by version."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from skybook.platform.event_schemas import EventPayload, MoneyData

OrderId = uuid.UUID
RecordLocator = str | None


class HeldSegmentData(BaseModel):
    """A flight and booking class of a hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flight_id: uuid.UUID = Field(description="Flight id.")
    booking_class: str = Field(description="Booking class letter.")


class HoldCreatedV1(EventPayload):
    """Seats were held for a party until the ticketing deadline."""

    event_type = "hold.created"
    order_id: OrderId = Field(description="The hold (order) id.")
    expires_at: dt.datetime = Field(description="Ticketing deadline; unpaid seats are released after it.")
    seats: int = Field(ge=1, description="Seats taken on every segment.")
    segments: list[HeldSegmentData] = Field(description="Flights in travel order.")
    total: MoneyData = Field(description="Total price.")


class HoldReleasedV1(EventPayload):
    """A hold was released (or cancelled before naming passengers); its seats are free again."""

    event_type = "hold.released"
    order_id: OrderId = Field(description="The hold (order) id.")
    record_locator: RecordLocator = Field(default=None, description="Always empty for a hold.")
    was: Literal["held"] = Field(default="held", description="Status before.")


class HoldExpiredV1(EventPayload):
    """A hold passed its deadline unconfirmed; its seats are free again."""

    event_type = "hold.expired"
    order_id: OrderId = Field(description="The hold (order) id.")
    record_locator: RecordLocator = Field(description="Always empty for a hold.")


class OrderConfirmedV1(EventPayload):
    """Passengers were named; the order has a record locator and awaits payment."""

    event_type = "order.confirmed"
    order_id: OrderId = Field(description="Order id.")
    record_locator: str = Field(description="Booking reference.")
    ticketing_deadline: dt.datetime = Field(description="Pay before this or the seats are released.")
    passengers: int = Field(ge=1, description="Number of named passengers.")


class TicketedPassengerData(BaseModel):
    """A passenger and their e-ticket."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="FAMILY/GIVEN, upper case.")
    type: Literal["ADT", "CHD", "INF"] = Field(description="Passenger type.")
    ticket_number: str = Field(pattern=r"^[0-9]{13}$", description="13-digit e-ticket number.")


class TicketedSegmentData(BaseModel):
    """A flown segment as printed on the itinerary receipt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    designator: str = Field(description="Carrier and flight number.")
    origin: str = Field(description="Origin airport (IATA).")
    destination: str = Field(description="Destination airport (IATA).")
    departure_at: dt.datetime = Field(description="Departure (UTC).")
    arrival_at: dt.datetime = Field(description="Arrival (UTC).")
    booking_class: str = Field(description="Booking class letter.")
    cabin: str = Field(description="Cabin code.")


class OrderTicketedV1(EventPayload):
    """E-tickets were issued for a paid order (by the ticketing consumer of payment.captured)."""

    event_type = "order.ticketed"
    order_id: OrderId = Field(description="Order id.")
    record_locator: str = Field(description="Booking reference.")
    contact_email: str | None = Field(description="Where the confirmation e-mail goes.")
    total: MoneyData = Field(description="Total paid.")
    passengers: list[TicketedPassengerData] = Field(description="Passengers with their ticket numbers.")
    segments: list[TicketedSegmentData] = Field(description="Flights in travel order.")


class OrderCancelledV1(EventPayload):
    """An order was cancelled; a paid one was voided or refunded first, and its seats are free again."""

    event_type = "order.cancelled"
    order_id: OrderId = Field(description="Order id.")
    record_locator: RecordLocator = Field(description="Booking reference.")
    was: Literal["confirmed", "ticketed"] = Field(description="Status before.")
    settlement: Literal["void", "refund"] | None = Field(
        default=None, description="How the money went back; absent when nothing was paid."
    )


class OrderExpiredV1(EventPayload):
    """A confirmed order was not paid by its deadline; its seats are free again."""

    event_type = "order.expired"
    order_id: OrderId = Field(description="Order id.")
    record_locator: RecordLocator = Field(description="Booking reference.")


class AssignedSeatData(BaseModel):
    """A passenger's seat on one flight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    passenger_id: uuid.UUID = Field(description="Passenger id.")
    flight_id: uuid.UUID = Field(description="Flight id.")
    seat: str = Field(description="Seat number, e.g. 14C.")


class SeatAssignedV1(EventPayload):
    """Passengers were given seats (a passenger who had one on that flight moved)."""

    event_type = "seat.assigned"
    order_id: OrderId = Field(description="Order id.")
    seats: list[AssignedSeatData] = Field(description="The new seats.")


EVENTS: tuple[type[EventPayload], ...] = (
    HoldCreatedV1,
    HoldReleasedV1,
    HoldExpiredV1,
    OrderConfirmedV1,
    OrderTicketedV1,
    OrderCancelledV1,
    OrderExpiredV1,
    SeatAssignedV1,
)

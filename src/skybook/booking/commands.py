"""Commands of the booking context: what a caller asks the system to do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from skybook.booking.model import PartySize, PassengerDetails
from skybook.payments import Card
from skybook.platform.security import Principal


@dataclass(frozen=True, slots=True)
class SegmentChoice:
    """A flight and the booking class to sell on it."""

    flight_id: uuid.UUID
    booking_class: str


@dataclass(frozen=True, slots=True)
class HoldSeats:
    """Take seats for a party on one or more flights until the ticketing deadline."""

    segments: tuple[SegmentChoice, ...]
    party: PartySize
    actor: Principal | None = None


@dataclass(frozen=True, slots=True)
class ReleaseHold:
    """Give the seats of a hold back before it expires."""

    order_id: uuid.UUID
    actor: Principal | None = None


@dataclass(frozen=True, slots=True)
class ConfirmOrder:
    """Name the passengers of a hold and turn it into an order with a record locator."""

    order_id: uuid.UUID
    passengers: tuple[PassengerDetails, ...]
    contact_email: str
    contact_phone: str | None
    actor: Principal | None = None


@dataclass(frozen=True, slots=True)
class PayOrder:
    """Charge the card and issue the e-tickets."""

    order_id: uuid.UUID
    card: Card
    actor: Principal | None = None


@dataclass(frozen=True, slots=True)
class SeatRequest:
    """One passenger's seat on one flight."""

    passenger_id: uuid.UUID
    flight_id: uuid.UUID
    seat_number: str


@dataclass(frozen=True, slots=True)
class AssignSeats:
    """Give passengers specific seats."""

    order_id: uuid.UUID
    seats: tuple[SeatRequest, ...]
    actor: Principal | None = None


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel a hold or order; a ticketed order is voided or refunded."""

    order_id: uuid.UUID
    actor: Principal | None = None

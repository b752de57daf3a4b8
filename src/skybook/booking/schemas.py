"""Request and response schemas of the booking API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import ConfigDict, EmailStr, Field

from skybook.platform.schemas import Currency, IataCode, Money, Output, Page, StrictInput

BookingClassCode = Annotated[str, Field(pattern=r"^[A-Z]$", description="Booking class (RBD) letter.", examples=["M"])]
# Invisible formatting characters have no place in a name printed on a ticket: bidirectional
# overrides, embeddings and isolates (which can make "Jensen" display as something else),
# zero-width spaces, word joiners and byte-order marks. C0/C1 control characters neither.
_INVISIBLE = r"\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=60,
        pattern=rf"^[^\d{_INVISIBLE}<>@#$%^*=_{{}}|\\\[\]]+$",
        description="Name as in the travel document.",
        examples=["Jensen"],
    ),
]
EXAMPLE_FLIGHT_ID = "01936d1e-7c1a-7b4e-9d3f-1a2b3c4d5e6f"
EXAMPLE_ORDER_ID = "01936d1f-0a2b-7c3d-8e4f-5a6b7c8d9e0f"
EXAMPLE_PASSENGER_ID = "01936d1f-3c4d-7e5f-9a6b-7c8d9e0f1a2b"
RecordLocator = Annotated[
    str,
    Field(
        pattern=r"^[2-9A-HJKMNP-Za-hjkmnp-z]{6}$",
        description="6-character booking reference.",
        examples=["K7PQ2M"],
    ),
]


class PartyInput(StrictInput):
    """Who travels: infants sit on an adult's lap and take no seat."""

    adults: int = Field(1, ge=0, le=9, description="Passengers aged 12 or more.")
    children: int = Field(0, ge=0, le=9, description="Passengers aged 2 to 11.")
    infants: int = Field(0, ge=0, le=9, description="Passengers under 2, one per adult.")


class SegmentInput(StrictInput):
    """A flight and the booking class to sell on it."""

    flight_id: uuid.UUID = Field(description="Flight id from a search offer.")
    booking_class: BookingClassCode


class HoldCreate(StrictInput):
    """Hold seats on one or more flights, in travel order."""

    segments: list[SegmentInput] = Field(min_length=1, max_length=4, description="Flights in travel order.")
    passengers: PartyInput = Field(description="How many of each passenger type.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "segments": [{"flight_id": EXAMPLE_FLIGHT_ID, "booking_class": "M"}],
                    "passengers": {"adults": 2, "children": 1, "infants": 0},
                }
            ]
        }
    )


class PassengerInput(StrictInput):
    """A passenger as written in their passport."""

    type: Literal["ADT", "CHD", "INF"] = Field(description="ADT adult, CHD child, INF lap infant.")
    given_name: Name
    family_name: Name
    date_of_birth: dt.date = Field(description="Date of birth.", examples=["1985-04-12"])


class ContactInput(StrictInput):
    """Who receives the confirmation and e-tickets."""

    email: EmailStr = Field(description="E-mail for the confirmation and e-tickets.")
    phone: str | None = Field(
        None,
        pattern=r"^\+[1-9][0-9]{6,14}$",
        description="E.164 phone number.",
        examples=["+4512345678"],
    )


class OrderCreate(StrictInput):
    """Confirm a hold: name its passengers; the answer carries the record locator."""

    hold_id: uuid.UUID = Field(description="The hold to confirm (its id).")
    passengers: list[PassengerInput] = Field(min_length=1, max_length=9, description="One entry per held passenger.")
    contact: ContactInput = Field(description="Contact for this booking.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "hold_id": EXAMPLE_ORDER_ID,
                    "passengers": [
                        {"type": "ADT", "given_name": "Anna", "family_name": "Jensen", "date_of_birth": "1985-04-12"},
                        {"type": "CHD", "given_name": "Emil", "family_name": "Jensen", "date_of_birth": "2017-09-03"},
                    ],
                    "contact": {"email": "anna.jensen@example.com", "phone": "+4512345678"},
                }
            ]
        }
    )


class CardInput(StrictInput):
    """Card details, used for this payment only and never stored."""

    number: str = Field(
        pattern=r"^[0-9]{12,19}$",
        description="Card number, digits only.",
        examples=["4242424242424242"],
    )
    exp_month: int = Field(ge=1, le=12, description="Expiry month.")
    exp_year: int = Field(ge=2000, le=2100, description="Expiry year (4 digits).")
    cvc: str = Field(pattern=r"^[0-9]{3,4}$", description="Card security code.", examples=["123"])
    holder: Name


class PaymentCreate(StrictInput):
    """Pay an order by card; success issues the e-tickets."""

    card: CardInput = Field(description="The card to charge.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "card": {
                        "number": "4242424242424242",
                        "exp_month": 12,
                        "exp_year": 2030,
                        "cvc": "123",
                        "holder": "Anna Jensen",
                    }
                }
            ]
        }
    )


class SeatInput(StrictInput):
    """One passenger's seat on one flight of the order."""

    passenger_id: uuid.UUID = Field(description="Passenger of the order.")
    flight_id: uuid.UUID = Field(description="Flight of the order.")
    seat: str = Field(pattern=r"^[1-9][0-9]?[A-K]$", description="Seat number.", examples=["14C"])


class SeatAssignmentCreate(StrictInput):
    """Seats to give passengers (a passenger already seated on that flight moves)."""

    seats: list[SeatInput] = Field(min_length=1, max_length=36, description="Requested seats.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"seats": [{"passenger_id": EXAMPLE_PASSENGER_ID, "flight_id": EXAMPLE_FLIGHT_ID, "seat": "14C"}]}
            ]
        }
    )


class OrderLookup(StrictInput):
    """'Manage my booking': find an order by its record locator and a passenger's family name."""

    record_locator: RecordLocator
    family_name: Name

    model_config = ConfigDict(json_schema_extra={"examples": [{"record_locator": "K7PQ2M", "family_name": "Jensen"}]})


class PartyRead(Output):
    """How many of each passenger type travel."""

    adults: int = Field(description="Passengers aged 12 or more.")
    children: int = Field(description="Passengers aged 2 to 11.")
    infants: int = Field(description="Lap infants.")


class SegmentRead(Output):
    """A booked flight."""

    segment_no: int = Field(description="Position in the itinerary, from 1.")
    flight_id: uuid.UUID = Field(description="Flight id.")
    designator: str = Field(description="Carrier and flight number.", examples=["XB101"])
    origin: IataCode
    destination: IataCode
    departure_at: dt.datetime = Field(description="Departure in UTC.")
    arrival_at: dt.datetime = Field(description="Arrival in UTC.")
    departure_local: dt.datetime = Field(description="Departure in the origin's local time.")
    arrival_local: dt.datetime = Field(description="Arrival in the destination's local time.")
    booking_class: BookingClassCode
    cabin: str = Field(description="Cabin code.")
    fare: Money = Field(description="Adult fare of this segment.")


class SeatRead(Output):
    """A passenger's seat on one flight."""

    flight_id: uuid.UUID = Field(description="Flight id.")
    seat: str = Field(description="Seat number.", examples=["14C"])


class PassengerRead(Output):
    """A named passenger."""

    id: uuid.UUID = Field(description="Passenger id (for seat selection).")
    type: str = Field(description="ADT, CHD or INF.")
    given_name: str = Field(description="Given name.")
    family_name: str = Field(description="Family name.")
    date_of_birth: dt.date = Field(description="Date of birth.")
    seats: list[SeatRead] = Field(description="Assigned seats.")


class CouponRead(Output):
    """The part of an e-ticket that covers one flight."""

    coupon_no: int = Field(description="Coupon number, one per segment.")
    flight_id: uuid.UUID = Field(description="Flight covered.")
    booking_class: str = Field(description="Booking class flown.")


class TicketRead(Output):
    """A 13-digit e-ticket: airline accounting code + 10-digit serial."""

    number: str = Field(pattern=r"^[0-9]{13}$", description="E-ticket number.", examples=["9870000000001"])
    passenger_id: uuid.UUID = Field(description="Passenger the ticket belongs to.")
    status: str = Field(description="issued, voided or refunded.")
    issued_at: dt.datetime = Field(description="When it was issued (UTC).")
    amount: int = Field(description="Fare of this ticket in minor units.")
    currency: Currency
    coupons: list[CouponRead] = Field(description="One coupon per segment.")


class OrderRead(Output):
    """A hold or order (PNR) with its segments, passengers and tickets."""

    id: uuid.UUID = Field(description="Order id; a hold and the order it becomes share it.")
    status: Literal["held", "confirmed", "ticketed", "cancelled", "expired"] = Field(
        description="held -> confirmed -> ticketed; or cancelled / expired."
    )
    record_locator: str | None = Field(description="Booking reference, set on confirmation.")
    passenger_counts: PartyRead = Field(description="Party size.")
    total: Money = Field(description="Total price for all passengers and segments.")
    expires_at: dt.datetime = Field(description="Ticketing deadline: unpaid seats are released after it.")
    contact_email: str | None = Field(description="Contact e-mail.")
    contact_phone: str | None = Field(description="Contact phone.")
    created_at: dt.datetime = Field(description="When the hold was made.")
    confirmed_at: dt.datetime | None = Field(description="When passengers were named.")
    ticketed_at: dt.datetime | None = Field(description="When tickets were issued.")
    cancelled_at: dt.datetime | None = Field(description="When it was cancelled.")
    segments: list[SegmentRead] = Field(description="Flights in travel order.")
    passengers: list[PassengerRead] = Field(description="Named passengers (empty while held).")
    tickets: list[TicketRead] = Field(description="E-tickets (after payment).")
    payment_status: Literal["pending", "captured", "declined", "failed", "voided", "refunded"] | None = Field(
        default=None,
        description="Status of the latest payment attempt: captured on a confirmed order means paid, "
        "e-tickets being issued. None before any attempt.",
    )


class OrderPage(Page[OrderRead]):
    """A page of orders."""


class SeatMapSeat(Output):
    """A seat and whether it can be chosen."""

    number: str = Field(description="Seat number.", examples=["14C"])
    row: int = Field(description="Row.")
    letter: str = Field(description="Seat letter.")
    window: bool = Field(description="Next to a window.")
    aisle: bool = Field(description="Next to an aisle.")
    exit_row: bool = Field(description="In an emergency exit row.")
    available: bool = Field(description="Free to choose.")


class SeatMapCabin(Output):
    """The seats of one cabin."""

    cabin: str = Field(description="Cabin code.")
    seats: list[SeatMapSeat] = Field(description="Seats front to back, left to right.")


class SeatMapRead(Output):
    """A flight's seat map with availability."""

    flight_id: uuid.UUID = Field(description="Flight id.")
    designator: str = Field(description="Carrier and flight number.")
    aircraft: str = Field(description="Aircraft type code.")
    cabins: list[SeatMapCabin] = Field(description="Cabins front to back.")


def to_order_read(view: dict[str, object]) -> OrderRead:
    """Shape a query view into the API schema."""
    v: dict = dict(view)  # type: ignore[type-arg]
    segments = [
        SegmentRead(
            segment_no=s["segment_no"],
            flight_id=s["flight_id"],
            designator=f"{s['carrier']}{s['flight_number']}",
            origin=s["origin"],
            destination=s["destination"],
            departure_at=s["departure_at"],
            arrival_at=s["arrival_at"],
            departure_local=s["departure_at"].astimezone(ZoneInfo(s["origin_zone"])),
            arrival_local=s["arrival_at"].astimezone(ZoneInfo(s["destination_zone"])),
            booking_class=s["booking_class"],
            cabin=s["cabin"],
            fare=Money(amount=s["fare_amount"], currency=s["currency"]),
        )
        for s in v["segments"]
    ]
    return OrderRead(
        id=v["id"],
        status=v["status"],
        record_locator=v["record_locator"],
        passenger_counts=PartyRead(adults=v["adults"], children=v["children"], infants=v["infants"]),
        total=Money(amount=v["total_amount"], currency=v["currency"]),
        expires_at=v["expires_at"],
        contact_email=v["contact_email"],
        contact_phone=v["contact_phone"],
        created_at=v["created_at"],
        confirmed_at=v["confirmed_at"],
        ticketed_at=v["ticketed_at"],
        cancelled_at=v["cancelled_at"],
        segments=segments,
        passengers=[PassengerRead.model_validate(p) for p in v["passengers"]],
        tickets=[TicketRead.model_validate(t) for t in v["tickets"]],
        payment_status=v.get("payment_status"),
    )

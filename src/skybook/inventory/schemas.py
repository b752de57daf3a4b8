"""Request and response schemas of the inventory API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field, field_validator

from skybook.platform.schemas import Currency, IataCode, Money, Output, Page, StrictInput

CabinCode = Literal["F", "J", "W", "Y"]
BookingClassCode = Annotated[str, Field(pattern=r"^[A-Z]$", description="Booking class (RBD) letter.", examples=["M"])]
CarrierCode = Annotated[str, Field(pattern=r"^[A-Z0-9]{2}$", description="IATA airline designator.", examples=["XB"])]
FlightNumber = Annotated[
    str, Field(pattern=r"^[0-9]{1,4}$", description="Flight number, 1-4 digits.", examples=["101"])
]
AircraftCode = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,8}$", description="Aircraft type code.", examples=["A320"])]

# Far beyond any real schedule, and early enough that converting local times never leaves the
# range a datetime can hold (9999-12-31 23:00 at UTC-12 is already past it).
LATEST_DATE = dt.date(2099, 12, 31)


_D = TypeVar("_D", dt.date, dt.datetime)


def _not_after_latest_date(value: _D) -> _D:
    day = value.date() if isinstance(value, dt.datetime) else value
    if day > LATEST_DATE:
        raise ValueError(f"must be on or before {LATEST_DATE.isoformat()}")
    return value


FlightInstant = Annotated[AwareDatetime, AfterValidator(_not_after_latest_date)]
ScheduleDate = Annotated[dt.date, AfterValidator(_not_after_latest_date)]


class AirportCreate(StrictInput):
    """An airport to add to the network."""

    iata: IataCode
    name: str = Field(min_length=2, max_length=120, description="Airport name.", examples=["Copenhagen Airport"])
    city: str = Field(min_length=1, max_length=80, description="City served.", examples=["Copenhagen"])
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country.", examples=["DK"])
    time_zone: str = Field(description="IANA time zone of the airport.", examples=["Europe/Copenhagen"])

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "iata": "CPH",
                    "name": "Copenhagen Airport",
                    "city": "Copenhagen",
                    "country": "DK",
                    "time_zone": "Europe/Copenhagen",
                }
            ]
        }
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


class AirportRead(Output):
    """An airport of the network."""

    iata: IataCode
    name: str = Field(description="Airport name.")
    city: str = Field(description="City served.")
    country: str = Field(description="ISO 3166-1 alpha-2 country.")
    time_zone: str = Field(description="IANA time zone.")


class AirportPage(Page[AirportRead]):
    """A page of airports."""


class CabinLayoutSchema(StrictInput):
    """A block of rows of one cabin with one seat layout."""

    cabin: CabinCode = Field(description="Cabin code: F first, J business, W premium economy, Y economy.")
    name: str = Field("", max_length=40, description="Marketing name of the cabin.")
    first_row: int = Field(ge=1, le=99, description="First row number of the block.")
    last_row: int = Field(ge=1, le=99, description="Last row number of the block.")
    layout: str = Field(
        pattern=r"^[A-K](-?[A-K]){0,11}$",
        description="Seat letters from left to right; '-' marks an aisle.",
        examples=["ABC-DEF"],
    )
    exit_rows: list[Annotated[int, Field(ge=1, le=99)]] = Field(
        default_factory=list, max_length=10, description="Rows at emergency exits."
    )


class AircraftTypeCreate(StrictInput):
    """An aircraft type and its seat map."""

    code: AircraftCode
    name: str = Field(
        min_length=2,
        max_length=80,
        description="Manufacturer and model.",
        examples=["Airbus A320-200"],
    )
    cabins: list[CabinLayoutSchema] = Field(min_length=1, max_length=8, description="Cabins from front to back.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "A320",
                    "name": "Airbus A320-200",
                    "cabins": [
                        {"cabin": "J", "name": "Business", "first_row": 1, "last_row": 3, "layout": "AC-DF"},
                        {
                            "cabin": "Y",
                            "name": "Economy",
                            "first_row": 4,
                            "last_row": 30,
                            "layout": "ABC-DEF",
                            "exit_rows": [12, 13],
                        },
                    ],
                }
            ]
        }
    )


class AircraftTypeRead(Output):
    """An aircraft type with its seat map and capacity per cabin."""

    code: AircraftCode
    name: str = Field(description="Manufacturer and model.")
    cabins: list[CabinLayoutSchema] = Field(description="Cabins from front to back.")
    capacity: dict[str, int] = Field(description="Physical seats per cabin code.", examples=[{"J": 12, "Y": 150}])


class AircraftTypePage(Page[AircraftTypeRead]):
    """A page of aircraft types."""


class FareInput(StrictInput):
    """A booking class to sell on a flight."""

    booking_class: BookingClassCode
    cabin: CabinCode = Field(description="Cabin the booking class sells.")
    amount: int = Field(ge=0, le=10_000_000, description="Adult fare in minor units.", examples=[15900])
    currency: Currency
    seat_limit: int = Field(ge=0, le=1000, description="Most seats this class may sell.", examples=[80])


class FlightCreate(StrictInput):
    """One dated flight to publish."""

    carrier: CarrierCode
    flight_number: FlightNumber
    origin: IataCode
    destination: IataCode
    departure_at: FlightInstant = Field(description="Departure instant (with offset), 2099 at the latest.")
    arrival_at: FlightInstant = Field(description="Arrival instant (with offset), 2099 at the latest.")
    aircraft: AircraftCode
    fares: list[FareInput] = Field(min_length=1, max_length=26, description="Booking classes to open.")
    overbooking: dict[CabinCode, Annotated[int, Field(ge=0, le=50)]] = Field(
        default_factory=dict, description="Authorised overbooking seats per cabin (default 0)."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "carrier": "XB",
                    "flight_number": "101",
                    "origin": "CPH",
                    "destination": "LHR",
                    "departure_at": "2030-06-01T07:05:00+02:00",
                    "arrival_at": "2030-06-01T07:55:00+01:00",
                    "aircraft": "A320",
                    "fares": [
                        {"booking_class": "J", "cabin": "J", "amount": 55900, "currency": "EUR", "seat_limit": 12},
                        {"booking_class": "M", "cabin": "Y", "amount": 15900, "currency": "EUR", "seat_limit": 80},
                    ],
                    "overbooking": {"Y": 3},
                }
            ]
        }
    )


class BookingClassRead(Output):
    """A booking class on a flight with what it can still sell."""

    code: BookingClassCode
    fare: Money = Field(description="Adult fare.")
    seat_limit: int = Field(description="Most seats this class may sell.")
    held: int = Field(description="Seats held and not yet paid.")
    sold: int = Field(description="Seats ticketed.")
    seats_available: int = Field(description="Seats this class can still sell now.")
    is_open: bool = Field(description="Whether the class is on sale.")


class CabinRead(Output):
    """A cabin of a flight and its seat counts."""

    cabin: CabinCode = Field(description="Cabin code.")
    capacity: int = Field(description="Physical seats.")
    overbooking_limit: int = Field(description="Authorised overbooking seats.")
    held: int = Field(description="Seats held and not yet paid.")
    sold: int = Field(description="Seats ticketed.")
    seats_available: int = Field(description="capacity + overbooking_limit - held - sold.")
    booking_classes: list[BookingClassRead] = Field(description="Booking classes sold in this cabin, dearest first.")


class FlightRead(Output):
    """A dated flight."""

    id: uuid.UUID = Field(description="Flight id.")
    carrier: CarrierCode
    flight_number: FlightNumber
    designator: str = Field(description="Carrier and number, e.g. XB101.", examples=["XB101"])
    departure_date: dt.date = Field(description="Local departure date at the origin.")
    origin: IataCode
    destination: IataCode
    departure_at: dt.datetime = Field(description="Departure in UTC.")
    arrival_at: dt.datetime = Field(description="Arrival in UTC.")
    departure_local: dt.datetime = Field(description="Departure in the origin's local time.")
    arrival_local: dt.datetime = Field(description="Arrival in the destination's local time.")
    aircraft: AircraftCode
    status: str = Field(description="scheduled or cancelled.", examples=["scheduled"])
    cabins: list[CabinRead] = Field(description="Cabins and their booking classes.")


class FlightPage(Page[FlightRead]):
    """A page of flights."""


class ScheduleLine(StrictInput):
    """A recurring flight: local times, weekdays and a period."""

    flight_number: FlightNumber
    origin: IataCode
    destination: IataCode
    departure_time: dt.time = Field(description="Local departure time at the origin.", examples=["07:05"])
    arrival_time: dt.time = Field(description="Local arrival time at the destination.", examples=["08:00"])
    arrival_day_offset: int = Field(0, ge=-1, le=2, description="Days between local departure and arrival dates.")
    days_of_week: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        min_length=1,
        max_length=7,
        description="ISO weekdays operated, 1 = Monday.",
        examples=[[1, 2, 3, 4, 5]],
    )
    aircraft: AircraftCode
    fares: list[FareInput] = Field(min_length=1, max_length=26, description="Booking classes to open.")
    period_start: ScheduleDate | None = Field(None, description="First date; defaults to the import's period_start.")
    period_end: ScheduleDate | None = Field(None, description="Last date; defaults to the import's period_end.")


class ScheduleImport(StrictInput):
    """A schedule: flight lines of one carrier operated over a period."""

    carrier: CarrierCode
    period_start: ScheduleDate = Field(description="First date of the period (local dates).")
    period_end: ScheduleDate = Field(description="Last date of the period, inclusive; 2099-12-31 at the latest.")
    flights: list[ScheduleLine] = Field(min_length=1, max_length=2000, description="The schedule lines.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "carrier": "XB",
                    "period_start": "2030-03-29",
                    "period_end": "2030-10-24",
                    "flights": [
                        {
                            "flight_number": "101",
                            "origin": "CPH",
                            "destination": "LHR",
                            "departure_time": "07:05",
                            "arrival_time": "07:55",
                            "days_of_week": [1, 2, 3, 4, 5],
                            "aircraft": "A320",
                            "fares": [
                                {
                                    "booking_class": "M",
                                    "cabin": "Y",
                                    "amount": 15900,
                                    "currency": "EUR",
                                    "seat_limit": 80,
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    )


class ScheduleImportResult(Output):
    """What an import did; importing the same schedule again creates nothing new."""

    created: int = Field(description="Dated flights created.")
    existing: int = Field(description="Dated flights that already existed and were left unchanged.")


class BookingClassUpdate(StrictInput):
    """Change the fare, seat limit or availability of a booking class."""

    amount: int | None = Field(None, ge=0, le=10_000_000, description="New adult fare in minor units.")
    seat_limit: int | None = Field(None, ge=0, le=1000, description="New seat limit.")
    is_open: bool | None = Field(None, description="Open or close the class for sale.")

    model_config = ConfigDict(json_schema_extra={"examples": [{"amount": 17900, "seat_limit": 40, "is_open": True}]})

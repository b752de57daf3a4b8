"""Booking domain rules: passengers, prices, record locators, the order lifecycle.

Pure Python: no framework or database imports.
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from skybook.platform.errors import HoldExpired, InvalidRequest, InvalidState, TooManyPassengers

# No 0/O, 1/I/L: a locator read over the phone or off a boarding pass cannot be misread.
LOCATOR_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LOCATOR_LENGTH = 6

# Share of the adult fare a child and an infant (on a lap, no seat) pay.
CHILD_FARE_PERCENT = 75
INFANT_FARE_PERCENT = 10


class OrderStatus(StrEnum):
    """Lifecycle: held -> confirmed -> ticketed; held/confirmed -> expired; any live -> cancelled."""

    HELD = "held"
    CONFIRMED = "confirmed"
    TICKETED = "ticketed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class PassengerType(StrEnum):
    """IATA passenger type codes."""

    ADULT = "ADT"
    CHILD = "CHD"
    INFANT = "INF"


@dataclass(frozen=True, slots=True)
class PartySize:
    """How many adults, children and lap infants travel together."""

    adults: int
    children: int = 0
    infants: int = 0

    def check(self, *, max_passengers: int) -> None:
        if min(self.adults, self.children, self.infants) < 0:
            raise InvalidRequest("passenger counts cannot be negative")
        if self.total == 0:
            raise InvalidRequest("a booking needs at least one passenger")
        if self.total > max_passengers:
            raise TooManyPassengers(f"at most {max_passengers} passengers per booking", limit=max_passengers)
        if self.adults == 0:
            raise InvalidRequest("children and infants travel with at least one adult")
        if self.infants > self.adults:
            raise InvalidRequest("each infant travels on the lap of an adult")

    @property
    def total(self) -> int:
        return self.adults + self.children + self.infants

    @property
    def seats(self) -> int:
        """Seats taken: infants sit on a lap."""
        return self.adults + self.children

    def price(self, adult_fare: int) -> int:
        """Fare for the whole party on one segment, in minor units."""
        child = adult_fare * CHILD_FARE_PERCENT // 100
        infant = adult_fare * INFANT_FARE_PERCENT // 100
        return self.adults * adult_fare + self.children * child + self.infants * infant

    def fare_for(self, passenger_type: PassengerType, adult_fare: int) -> int:
        """Fare of one passenger of a type on one segment."""
        if passenger_type is PassengerType.CHILD:
            return adult_fare * CHILD_FARE_PERCENT // 100
        if passenger_type is PassengerType.INFANT:
            return adult_fare * INFANT_FARE_PERCENT // 100
        return adult_fare


def new_record_locator() -> str:
    """A random 6-character record locator from the unambiguous alphabet."""
    return "".join(secrets.choice(LOCATOR_ALPHABET) for _ in range(LOCATOR_LENGTH))


def name_key(family_name: str) -> str:
    """Family name folded for look-up: accents removed, upper case, spaces and hyphens dropped."""
    decomposed = unicodedata.normalize("NFKD", family_name)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return "".join(ch for ch in plain.upper() if ch.isalnum())


def age_on(born: date, day: date) -> int:
    """Age in whole years on a day."""
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


@dataclass(frozen=True, slots=True)
class PassengerDetails:
    """A named passenger as given when confirming."""

    type: PassengerType
    given_name: str
    family_name: str
    date_of_birth: date


def check_passengers(
    party: PartySize,
    named: list[PassengerDetails],
    *,
    today: date,
    first_flight: date,
    last_flight: date,
) -> None:
    """Named passengers must match the held party and their ages their types."""
    counts = {t: sum(1 for p in named if p.type is t) for t in PassengerType}
    expected = {
        PassengerType.ADULT: party.adults,
        PassengerType.CHILD: party.children,
        PassengerType.INFANT: party.infants,
    }
    if counts != expected:
        raise InvalidRequest(
            f"passengers must match the hold: {party.adults} ADT, {party.children} CHD, {party.infants} INF",
        )
    for i, p in enumerate(named):
        if p.date_of_birth > today:
            raise InvalidRequest(f"passenger {i + 1}: date of birth is in the future")
        if p.type is PassengerType.INFANT and age_on(p.date_of_birth, last_flight) >= 2:
            raise InvalidRequest(f"passenger {i + 1}: an infant must be under 2 on the last flight")
        if p.type is PassengerType.CHILD and not 2 <= age_on(p.date_of_birth, first_flight) < 12:
            raise InvalidRequest(f"passenger {i + 1}: a child is 2 to 11 years old when travelling")
        if p.type is PassengerType.ADULT and age_on(p.date_of_birth, first_flight) < 12:
            raise InvalidRequest(f"passenger {i + 1}: an adult is 12 or older when travelling")


def require_status(status: str, allowed: set[OrderStatus], *, action: str) -> None:
    """Refuse an action the order's current status does not allow."""
    if status in allowed:
        return
    if status == OrderStatus.EXPIRED:
        raise HoldExpired(f"cannot {action}: the order expired")
    raise InvalidState(f"cannot {action} an order that is {status}", current_status=status)

"""Inventory domain: seat maps, dated flights from schedules, cabins and booking classes.

Pure Python: no framework or database imports.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from skybook.platform.errors import InvalidRequest

CABIN_CODES = ("F", "J", "W", "Y")
CABIN_NAMES = {"F": "First", "J": "Business", "W": "Premium Economy", "Y": "Economy"}


@dataclass(frozen=True, slots=True)
class Seat:
    """One physical seat of an aircraft seat map."""

    number: str
    row: int
    letter: str
    cabin: str
    window: bool
    aisle: bool
    exit_row: bool


@dataclass(frozen=True, slots=True)
class CabinLayout:
    """A block of rows sharing one seat layout, e.g. rows 4-30 ``ABC-DEF`` in economy."""

    cabin: str
    first_row: int
    last_row: int
    layout: str
    exit_rows: tuple[int, ...] = ()
    name: str = ""

    @property
    def letters(self) -> list[str]:
        return [ch for ch in self.layout if ch != "-"]

    @property
    def capacity(self) -> int:
        return (self.last_row - self.first_row + 1) * len(self.letters)

    def seats(self) -> Iterator[Seat]:
        blocks = self.layout.split("-")
        aisle_letters = set()
        for i, block in enumerate(blocks):
            if i > 0:
                aisle_letters.add(block[0])
            if i < len(blocks) - 1:
                aisle_letters.add(block[-1])
        letters = self.letters
        window_letters = {letters[0], letters[-1]}
        for row in range(self.first_row, self.last_row + 1):
            for letter in letters:
                yield Seat(
                    number=f"{row}{letter}",
                    row=row,
                    letter=letter,
                    cabin=self.cabin,
                    window=letter in window_letters,
                    aisle=letter in aisle_letters,
                    exit_row=row in self.exit_rows,
                )


@dataclass(frozen=True, slots=True)
class SeatMap:
    """The seat map of an aircraft type: cabin layouts from front to back."""

    cabins: tuple[CabinLayout, ...]

    def __post_init__(self) -> None:
        last = 0
        seen: set[str] = set()
        for c in self.cabins:
            if c.cabin not in CABIN_CODES:
                raise InvalidRequest(f"unknown cabin code {c.cabin!r}; use one of {', '.join(CABIN_CODES)}")
            if c.first_row <= last or c.last_row < c.first_row:
                raise InvalidRequest("cabin rows must be increasing and must not overlap")
            letters = c.letters
            if not letters or len(set(letters)) != len(letters) or not all(ch.isalpha() for ch in letters):
                raise InvalidRequest(f"seat layout {c.layout!r} must list distinct letters")
            if c.layout.startswith("-") or c.layout.endswith("-") or "--" in c.layout:
                raise InvalidRequest(f"seat layout {c.layout!r} has a misplaced aisle")
            if any(not c.first_row <= r <= c.last_row for r in c.exit_rows):
                raise InvalidRequest("exit rows must lie inside their cabin")
            last = c.last_row
            seen.add(c.cabin)
        if not self.cabins:
            raise InvalidRequest("a seat map needs at least one cabin")

    def capacity_by_cabin(self) -> dict[str, int]:
        """Physical seats per cabin code."""
        out: dict[str, int] = {}
        for c in self.cabins:
            out[c.cabin] = out.get(c.cabin, 0) + c.capacity
        return out

    def seats(self) -> Iterator[Seat]:
        for c in self.cabins:
            yield from c.seats()

    def seat(self, number: str) -> Seat | None:
        """The seat with this number (``12C``), or None when the aircraft has none."""
        for s in self.seats():
            if s.number == number:
                return s
        return None


@dataclass(frozen=True, slots=True)
class FareSpec:
    """A booking class to open on a flight: letter, cabin, fare and its own seat limit."""

    booking_class: str
    cabin: str
    amount: int
    currency: str
    seat_limit: int


@dataclass(frozen=True, slots=True)
class DatedFlight:
    """One operating flight on one date, times in UTC."""

    carrier: str
    flight_number: str
    departure_date: date
    origin: str
    destination: str
    departure_at: datetime
    arrival_at: datetime
    aircraft: str


def local_to_utc(day: date, at: time, zone: str) -> datetime:
    """The UTC instant of a local wall-clock time at an airport."""
    return datetime.combine(day, at, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def expand_schedule_line(
    *,
    carrier: str,
    flight_number: str,
    origin: str,
    destination: str,
    origin_zone: str,
    destination_zone: str,
    departure_time: time,
    arrival_time: time,
    arrival_day_offset: int,
    days_of_week: Sequence[int],
    period_start: date,
    period_end: date,
    aircraft: str,
) -> list[DatedFlight]:
    """Dated flights of one schedule line: every listed weekday between the two dates (inclusive)."""
    if period_end < period_start:
        raise InvalidRequest("period_end is before period_start")
    if (period_end - period_start).days > 366:
        raise InvalidRequest("a schedule period covers at most one year")
    days = set(days_of_week)
    flights: list[DatedFlight] = []
    day = period_start
    while day <= period_end:
        if day.isoweekday() in days:
            dep = local_to_utc(day, departure_time, origin_zone)
            arr = local_to_utc(day + timedelta(days=arrival_day_offset), arrival_time, destination_zone)
            if arr <= dep:
                raise InvalidRequest(f"{carrier}{flight_number} on {day} would arrive before it departs")
            flights.append(DatedFlight(carrier, flight_number, day, origin, destination, dep, arr, aircraft))
        day += timedelta(days=1)
    return flights


def check_fares(fares: Sequence[FareSpec], capacity_by_cabin: dict[str, int]) -> None:
    """Every fare sells in a cabin the aircraft has, each booking class appears once."""
    letters = [f.booking_class for f in fares]
    if len(set(letters)) != len(letters):
        raise InvalidRequest("each booking class may appear only once per flight")
    for f in fares:
        if f.cabin not in capacity_by_cabin:
            raise InvalidRequest(f"booking class {f.booking_class} sells cabin {f.cabin}, which the aircraft lacks")
    currencies = {f.currency for f in fares}
    if len(currencies) > 1:
        raise InvalidRequest("all fares of one flight must use one currency")

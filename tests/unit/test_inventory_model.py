"""Seat maps and schedules."""

from __future__ import annotations

from datetime import date, time

import pytest

from skybook.inventory.model import CabinLayout, SeatMap, expand_schedule_line
from skybook.payments import luhn_valid
from skybook.platform.errors import InvalidRequest


def test_seat_map_knows_windows_aisles_exits_and_capacity() -> None:
    seat_map = SeatMap((CabinLayout("J", 1, 2, "AC-DF"), CabinLayout("Y", 3, 12, "ABC-DEF", exit_rows=(7,))))
    assert seat_map.capacity_by_cabin() == {"J": 8, "Y": 60}
    a, c, d = seat_map.seat("7A"), seat_map.seat("7C"), seat_map.seat("7D")
    assert a is not None and a.window and not a.aisle and a.exit_row
    assert c is not None and c.aisle and not c.window
    assert d is not None and d.aisle
    assert seat_map.seat("13A") is None
    assert seat_map.seat("1B") is None  # business has no B seat


@pytest.mark.parametrize(
    "cabins",
    [
        (CabinLayout("Y", 3, 12, "ABC-DEF"), CabinLayout("J", 1, 2, "AC-DF")),  # rows go backwards
        (CabinLayout("Y", 1, 10, "ABC--DEF"),),
        (CabinLayout("Y", 1, 10, "AAB-CD"),),
        (CabinLayout("Y", 1, 10, "ABC-DEF", exit_rows=(11,)),),
        (CabinLayout("X", 1, 10, "ABC-DEF"),),
    ],
)
def test_inconsistent_seat_maps_are_refused(cabins: tuple[CabinLayout, ...]) -> None:
    with pytest.raises(InvalidRequest):
        SeatMap(cabins)


def test_schedule_line_uses_local_times_across_a_daylight_saving_change() -> None:
    # Copenhagen -> New York over the last weekend of March 2026 (Europe changes clocks on the 29th).
    flights = expand_schedule_line(
        carrier="XB",
        flight_number="901",
        origin="CPH",
        destination="JFK",
        origin_zone="Europe/Copenhagen",
        destination_zone="America/New_York",
        departure_time=time(10, 0),
        arrival_time=time(12, 30),
        arrival_day_offset=0,
        days_of_week=[6, 7],
        period_start=date(2026, 3, 27),
        period_end=date(2026, 3, 30),
        aircraft="A333",
    )
    assert [f.departure_date for f in flights] == [date(2026, 3, 28), date(2026, 3, 29)]
    sat, sun = flights
    assert sat.departure_at.hour == 9 and sun.departure_at.hour == 8  # CET then CEST, in UTC
    # New York is on summer time since 8 March; Europe moves on the 29th, so the same local times
    # mean an hour longer in the air on Sunday.
    assert (sat.arrival_at - sat.departure_at).total_seconds() / 3600 == 7.5
    assert (sun.arrival_at - sun.departure_at).total_seconds() / 3600 == 8.5


def test_a_flight_arriving_before_it_departs_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        expand_schedule_line(
            carrier="XB",
            flight_number="1",
            origin="CPH",
            destination="LHR",
            origin_zone="Europe/Copenhagen",
            destination_zone="Europe/London",
            departure_time=time(10, 0),
            arrival_time=time(8, 0),
            arrival_day_offset=0,
            days_of_week=[1, 2, 3, 4, 5, 6, 7],
            period_start=date(2026, 1, 1),
            period_end=date(2026, 1, 2),
            aircraft="A320",
        )


@pytest.mark.parametrize(
    ("number", "valid"), [("4242424242424242", True), ("4242424242424241", False), ("12", False), ("abcd", False)]
)
def test_card_numbers_pass_the_luhn_check(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid

"""Booking rules that need no database."""

from __future__ import annotations

from datetime import date

import pytest

from skybook.booking.model import (
    LOCATOR_ALPHABET,
    PartySize,
    PassengerDetails,
    PassengerType,
    age_on,
    check_passengers,
    name_key,
    new_record_locator,
)
from skybook.platform.errors import InvalidRequest, TooManyPassengers


def test_infants_sit_on_a_lap_and_pay_a_tenth() -> None:
    party = PartySize(adults=2, children=1, infants=1)
    assert party.seats == 3
    assert party.price(10000) == 2 * 10000 + 7500 + 1000


@pytest.mark.parametrize(
    ("party", "error"),
    [
        (PartySize(0), InvalidRequest),
        (PartySize(0, 2), InvalidRequest),
        (PartySize(1, 0, 2), InvalidRequest),
        (PartySize(5, 5), TooManyPassengers),
        (PartySize(-1, 3), InvalidRequest),
    ],
)
def test_impossible_parties_are_refused(party: PartySize, error: type[Exception]) -> None:
    with pytest.raises(error):
        party.check(max_passengers=9)


def test_record_locators_avoid_characters_read_wrongly() -> None:
    locators = {new_record_locator() for _ in range(2000)}
    assert len(locators) > 1990
    assert all(len(x) == 6 and set(x) <= set(LOCATOR_ALPHABET) for x in locators)
    assert not set(LOCATOR_ALPHABET) & set("01OIL")


def test_family_names_match_without_accents_case_or_hyphens() -> None:
    assert name_key("Müller-Lüdenscheidt") == name_key("MULLER LUDENSCHEIDT")
    assert name_key("Ørsted") != ""


def test_age_counts_whole_years_up_to_the_birthday() -> None:
    assert age_on(date(2000, 6, 15), date(2010, 6, 14)) == 9
    assert age_on(date(2000, 6, 15), date(2010, 6, 15)) == 10


def _p(kind: PassengerType, born: date) -> PassengerDetails:
    return PassengerDetails(kind, "A", "B", born)


def test_passengers_must_match_the_held_party_and_their_ages() -> None:
    party = PartySize(1, 0, 1)
    today, fly = date(2026, 1, 1), date(2026, 3, 1)
    check_passengers(
        party,
        [_p(PassengerType.ADULT, date(1990, 1, 1)), _p(PassengerType.INFANT, date(2025, 6, 1))],
        today=today,
        first_flight=fly,
        last_flight=fly,
    )
    with pytest.raises(InvalidRequest, match="match the hold"):
        check_passengers(
            party, [_p(PassengerType.ADULT, date(1990, 1, 1))], today=today, first_flight=fly, last_flight=fly
        )
    with pytest.raises(InvalidRequest, match="infant"):
        check_passengers(
            party,
            [_p(PassengerType.ADULT, date(1990, 1, 1)), _p(PassengerType.INFANT, date(2023, 1, 1))],
            today=today,
            first_flight=fly,
            last_flight=fly,
        )
    with pytest.raises(InvalidRequest, match="adult"):
        check_passengers(
            PartySize(1), [_p(PassengerType.ADULT, date(2020, 1, 1))], today=today, first_flight=fly, last_flight=fly
        )

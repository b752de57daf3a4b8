"""Airline staff publish schedules and fares; the inventory answers for them."""

from __future__ import annotations

from datetime import timedelta

from tests.conftest import Network


def _schedule(network: Network, days: int = 7) -> dict[str, object]:
    start = network.clock.now().date() + timedelta(days=1)
    return {
        "carrier": "XB",
        "period_start": start.isoformat(),
        "period_end": (start + timedelta(days=days - 1)).isoformat(),
        "flights": [
            {
                "flight_number": "101",
                "origin": "CPH",
                "destination": "LHR",
                "departure_time": "07:05",
                "arrival_time": "07:55",
                "days_of_week": [1, 2, 3, 4, 5, 6, 7],
                "aircraft": "T60",
                "fares": [{"booking_class": "Y", "cabin": "Y", "amount": 20000, "currency": "EUR", "seat_limit": 60}],
            },
            {
                "flight_number": "901",
                "origin": "CPH",
                "destination": "JFK",
                "departure_time": "10:00",
                "arrival_time": "12:30",
                "days_of_week": [1, 3, 5],
                "aircraft": "T60",
                "fares": [{"booking_class": "J", "cabin": "J", "amount": 250000, "currency": "EUR", "seat_limit": 8}],
            },
        ],
    }


async def test_schedule_import_creates_dated_flights_once(network: Network) -> None:
    body = _schedule(network)
    first = await network.staff.post("/v1/schedules/import", json=body)
    assert first.status_code == 200, first.text
    assert first.json() == {"created": 7 + 3, "existing": 0}
    again = await network.staff.post("/v1/schedules/import", json=body)
    assert again.json() == {"created": 0, "existing": 10}
    flights = (
        await network.client.get("/v1/flights", params={"origin": "CPH", "destination": "LHR", "page_size": 100})
    ).json()
    assert flights["page_info"]["total"] == 7
    one = flights["items"][0]
    # Local times as published: 07:05 in Copenhagen, 07:55 in London.
    assert one["departure_local"][11:16] == "07:05"
    assert one["arrival_local"][11:16] == "07:55"
    assert one["designator"] == "XB101"
    assert [c["cabin"] for c in one["cabins"]] == ["J", "Y"]


async def test_schedule_naming_an_unknown_airport_creates_nothing(network: Network) -> None:
    body = _schedule(network)
    body["flights"][1]["destination"] = "ZZZ"  # type: ignore[index]
    r = await network.staff.post("/v1/schedules/import", json=body)
    assert r.status_code == 422
    assert r.json()["code"] == "unknown_airport"
    assert (await network.client.get("/v1/flights")).json()["page_info"]["total"] == 0


async def test_closing_a_booking_class_stops_its_sale_and_its_offers(network: Network) -> None:
    flight = await network.flight()
    closed = await network.staff.patch(f"/v1/flights/{flight['id']}/booking-classes/Q", json={"is_open": False})
    assert closed.status_code == 200
    hold = await network.hold(flight["id"], "Q")
    assert hold.status_code == 409
    assert hold.json()["code"] == "booking_class_closed"
    offers = (
        await network.client.get(
            "/v1/offers", params={"origin": "CPH", "destination": "LHR", "departure_date": flight["departure_date"]}
        )
    ).json()
    assert offers["items"][0]["segments"][0]["booking_class"] == "M"


async def test_new_fare_prices_new_holds_but_not_existing_ones(network: Network) -> None:
    flight = await network.flight()
    before = (await network.hold(flight["id"], "M")).json()
    await network.staff.patch(f"/v1/flights/{flight['id']}/booking-classes/M", json={"amount": 17500})
    after = (await network.hold(flight["id"], "M")).json()
    assert before["total"]["amount"] == 15000
    assert after["total"]["amount"] == 17500
    assert (await network.client.get(f"/v1/holds/{before['id']}")).json()["total"]["amount"] == 15000


async def test_a_cancelled_flight_cannot_be_held(network: Network) -> None:
    flight = await network.flight()
    assert (await network.staff.post(f"/v1/flights/{flight['id']}/cancel")).json()["status"] == "cancelled"
    r = await network.hold(flight["id"])
    assert r.status_code == 409
    assert r.json()["code"] == "flight_not_bookable"


async def test_seat_map_shows_layout_and_taken_seats(network: Network) -> None:
    flight = await network.flight()
    seat_map = (await network.client.get(f"/v1/flights/{flight['id']}/seat-map")).json()
    cabins = {c["cabin"]: c["seats"] for c in seat_map["cabins"]}
    assert len(cabins["J"]) == 8
    assert len(cabins["Y"]) == 60
    seven_a = next(s for s in cabins["Y"] if s["number"] == "7A")
    assert seven_a == {
        "number": "7A",
        "row": 7,
        "letter": "A",
        "window": True,
        "aisle": False,
        "exit_row": True,
        "available": True,
    }


async def test_flights_departed_are_not_offered(network: Network) -> None:
    flight = await network.flight(days=1)
    network.clock.advance(timedelta(days=2))
    r = await network.hold(flight["id"])
    assert r.status_code == 409
    assert r.json()["code"] == "flight_not_bookable"

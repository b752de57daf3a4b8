"""The reservation spine end to end over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import httpx
import sqlalchemy as sa

from skybook.bootstrap import Container
from skybook.platform.clock import FakeClock
from skybook.platform.outbox import outbox
from tests.conftest import CARD_DECLINED, CARD_ERROR, CARD_OK, Network, adult


async def _confirm(client: httpx.AsyncClient, hold_id: str, passengers: list[dict[str, str]]) -> httpx.Response:
    return await client.post(
        "/v1/orders",
        json={
            "hold_id": hold_id,
            "passengers": passengers,
            "contact": {"email": "anna@example.com", "phone": "+4512345678"},
        },
    )


async def _seats_available(client: httpx.AsyncClient, flight_id: str, cabin: str = "Y") -> int:
    flight = (await client.get(f"/v1/flights/{flight_id}")).json()
    return next(c["seats_available"] for c in flight["cabins"] if c["cabin"] == cabin)


async def test_search_hold_confirm_pay_issues_one_13_digit_ticket_per_passenger(
    network: Network, container: Container
) -> None:
    client = network.client
    flight = await network.flight()
    day = flight["departure_date"]
    offers = (
        await client.get(
            "/v1/offers",
            params={"origin": "CPH", "destination": "LHR", "departure_date": day, "adults": 2, "infants": 1},
        )
    ).json()
    offer = offers["items"][0]
    seg = offer["segments"][0]
    assert seg["flight_id"] == flight["id"]
    assert seg["booking_class"] == "Q"  # the cheapest open class with room
    # 2 adults at 8000 + a lap infant at 10 %
    assert offer["total"] == {"amount": 2 * 8000 + 800, "currency": "EUR"}

    hold = await network.hold(flight["id"], "Q", adults=2, infants=1)
    assert hold.status_code == 201, hold.text
    held = hold.json()
    assert held["status"] == "held"
    assert held["record_locator"] is None
    assert held["total"]["amount"] == offer["total"]["amount"]
    assert await _seats_available(client, flight["id"]) == 58  # infants take no seat

    order = await _confirm(
        client,
        held["id"],
        [
            adult(),
            adult("Bo", born="1983-01-02"),
            {
                "type": "INF",
                "given_name": "Cy",
                "family_name": "Jensen",
                "date_of_birth": str(network.clock.now().date() - timedelta(days=200)),
            },
        ],
    )
    assert order.status_code == 201, order.text
    confirmed = order.json()
    assert confirmed["status"] == "confirmed"
    locator = confirmed["record_locator"]
    assert len(locator) == 6
    assert not set(locator) & set("01OIL")

    paid = await client.post(f"/v1/orders/{held['id']}/payments", json={"card": CARD_OK})
    assert paid.status_code == 200, paid.text
    ticketed = paid.json()
    assert ticketed["status"] == "ticketed"
    numbers = [t["number"] for t in ticketed["tickets"]]
    assert len(numbers) == 3 and len(set(numbers)) == 3
    assert all(len(n) == 13 and n.isdigit() and n.startswith("987") for n in numbers)
    assert {t["passenger_id"] for t in ticketed["tickets"]} == {p["id"] for p in ticketed["passengers"]}
    assert all(len(t["coupons"]) == 1 and t["coupons"][0]["flight_id"] == flight["id"] for t in ticketed["tickets"])
    assert sum(t["amount"] for t in ticketed["tickets"]) == ticketed["total"]["amount"]

    counts = next(c for c in (await client.get(f"/v1/flights/{flight['id']}")).json()["cabins"] if c["cabin"] == "Y")
    assert (counts["held"], counts["sold"]) == (0, 2)

    # The confirmation e-mail with the e-tickets is written once the event is dispatched.
    await container.dispatcher.drain()
    mails = list(container.settings.mail_dir.glob(f"{locator}-*.eml"))
    assert len(mails) == 1
    text = mails[0].read_text()
    assert "anna@example.com" in text and all(n in text for n in numbers)

    # Manage my booking: by locator and family name, case and accents folded.
    found = await client.post("/v1/orders/lookup", json={"record_locator": locator.lower(), "family_name": "jensen"})
    assert found.status_code == 200 and found.json()["id"] == held["id"]
    wrong = await client.post("/v1/orders/lookup", json={"record_locator": locator, "family_name": "Hansen"})
    assert wrong.status_code == 404 and wrong.json()["code"] == "not_found"


async def test_every_state_change_writes_its_event_in_the_envelope(network: Network, container: Container) -> None:
    flight = await network.flight()
    hold = (await network.hold(flight["id"], headers={"X-Request-ID": "req-42"})).json()
    await _confirm(network.client, hold["id"], [adult()])
    await network.client.post(f"/v1/orders/{hold['id']}/payments", json={"card": CARD_OK})
    async with container.engine.connect() as conn:
        rows = list(await conn.execute(sa.select(outbox).order_by(outbox.c.position)))
    types = [r.type for r in rows]
    assert types == [
        "flight.scheduled",
        "hold.created",
        "inventory.changed",
        "order.confirmed",
        "payment.captured",
        "order.ticketed",
        "inventory.changed",
    ]
    created = rows[1]
    assert created.aggregate_id == hold["id"]
    assert created.correlation_id == "req-42"
    assert created.version == 1 and created.event_id.version == 7
    assert created.data["segments"][0]["flight_id"] == flight["id"]


async def test_declined_card_keeps_the_hold_until_it_expires(network: Network, container: Container) -> None:
    client = network.client
    flight = await network.flight()
    hold = (await network.hold(flight["id"], adults=2)).json()
    await _confirm(client, hold["id"], [adult(), adult("Bo")])

    declined = await client.post(f"/v1/orders/{hold['id']}/payments", json={"card": CARD_DECLINED})
    assert declined.status_code == 402
    assert declined.headers["content-type"] == "application/problem+json"
    assert declined.json()["code"] == "payment_declined"
    assert (await client.get(f"/v1/orders/{hold['id']}")).json()["status"] == "confirmed"
    assert await _seats_available(client, flight["id"]) == 58

    failed = await client.post(f"/v1/orders/{hold['id']}/payments", json={"card": CARD_ERROR})
    assert failed.status_code == 502 and failed.json()["code"] == "payment_provider_error"

    # Past the ticketing deadline the sweeper releases the seats and paying is refused.
    assert isinstance(container.clock, FakeClock)
    container.clock.advance(timedelta(seconds=container.settings.hold_ttl_seconds + 1))
    from skybook.booking.handlers import expire_overdue

    assert await expire_overdue(container) == 1
    assert (await client.get(f"/v1/orders/{hold['id']}")).json()["status"] == "expired"
    assert await _seats_available(client, flight["id"]) == 60
    late = await client.post(f"/v1/orders/{hold['id']}/payments", json={"card": CARD_OK})
    assert late.status_code == 409 and late.json()["code"] == "hold_expired"


async def test_expired_hold_cannot_be_confirmed_even_before_the_sweeper_runs(network: Network) -> None:
    flight = await network.flight()
    hold = (await network.hold(flight["id"])).json()
    network.clock.advance(timedelta(minutes=16))
    r = await _confirm(network.client, hold["id"], [adult()])
    assert r.status_code == 409 and r.json()["code"] == "hold_expired"


async def test_paying_twice_is_refused_and_charges_once(network: Network, payments: object) -> None:
    client = network.client
    flight = await network.flight()
    hold = (await network.hold(flight["id"])).json()
    await _confirm(client, hold["id"], [adult()])
    assert (await client.post(f"/v1/orders/{hold['id']}/payments", json={"card": CARD_OK})).status_code == 200
    again = await client.post(f"/v1/orders/{hold['id']}/payments", json={"card": CARD_OK})
    assert again.status_code == 409 and again.json()["code"] == "already_paid"
    assert [c for c, _ in payments.calls].count("capture") == 1  # type: ignore[attr-defined]


async def test_release_gives_seats_back_at_once(network: Network) -> None:
    flight = await network.flight()
    hold = (await network.hold(flight["id"], adults=3)).json()
    assert await _seats_available(network.client, flight["id"]) == 57
    r = await network.client.post(f"/v1/holds/{hold['id']}/release")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert await _seats_available(network.client, flight["id"]) == 60
    again = await network.client.post(f"/v1/holds/{hold['id']}/release")
    assert again.status_code == 409 and again.json()["code"] == "invalid_state"


async def test_cancel_after_ticketing_voids_on_the_day_and_refunds_later(network: Network, payments: object) -> None:
    client = network.client
    flight = await network.flight(days=5)
    orders = []
    for _ in range(2):
        hold = (await network.hold(flight["id"])).json()
        await _confirm(client, hold["id"], [adult()])
        await client.post(f"/v1/orders/{hold['id']}/payments", json={"card": CARD_OK})
        orders.append(hold["id"])
    assert await _seats_available(client, flight["id"]) == 58

    voided = (await client.post(f"/v1/orders/{orders[0]}/cancel")).json()
    assert voided["status"] == "cancelled" and [t["status"] for t in voided["tickets"]] == ["voided"]

    network.clock.advance(timedelta(days=1))
    refunded = (await client.post(f"/v1/orders/{orders[1]}/cancel")).json()
    assert [t["status"] for t in refunded["tickets"]] == ["refunded"]
    assert [c for c, _ in payments.calls].count("refund") == 1  # type: ignore[attr-defined]
    assert await _seats_available(client, flight["id"]) == 60


async def test_cancel_before_ticketing_releases_seats(network: Network) -> None:
    flight = await network.flight()
    hold = (await network.hold(flight["id"], adults=2)).json()
    await _confirm(network.client, hold["id"], [adult(), adult("Bo")])
    r = await network.client.post(f"/v1/orders/{hold['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert await _seats_available(network.client, flight["id"]) == 60


async def test_a_cheaper_class_closes_while_dearer_ones_still_sell(network: Network) -> None:
    flight = await network.flight()
    assert (await network.hold(flight["id"], "Q", adults=5)).status_code == 201
    full = await network.hold(flight["id"], "Q")
    assert full.status_code == 409 and full.json()["code"] == "sold_out"
    assert (await network.hold(flight["id"], "M")).status_code == 201
    offers = (
        await network.client.get(
            "/v1/offers", params={"origin": "CPH", "destination": "LHR", "departure_date": flight["departure_date"]}
        )
    ).json()
    assert offers["items"][0]["segments"][0]["booking_class"] == "M"


async def test_authorised_overbooking_sells_past_capacity_but_not_further(network: Network) -> None:
    fares = [{"booking_class": "Y", "cabin": "Y", "amount": 30000, "currency": "EUR", "seat_limit": 70}]
    flight = await network.flight(fares=fares, overbooking={"Y": 2})
    for _ in range(6):
        assert (await network.hold(flight["id"], "Y", adults=9)).status_code == 201
    assert (await network.hold(flight["id"], "Y", adults=8)).status_code == 201  # 62 = 60 seats + 2 authorised
    assert (await network.hold(flight["id"], "Y", adults=1)).status_code == 409


async def test_round_trip_offers_pair_outbound_and_return(network: Network) -> None:
    out = await network.flight(origin="CPH", destination="LHR", days=3)
    back = await network.flight(origin="LHR", destination="CPH", days=6)
    offers = (
        await network.client.get(
            "/v1/offers",
            params={
                "origin": "CPH",
                "destination": "LHR",
                "departure_date": out["departure_date"],
                "return_date": back["departure_date"],
            },
        )
    ).json()
    assert offers["page_info"]["total"] == 1
    segs = offers["items"][0]["segments"]
    assert [s["flight_id"] for s in segs] == [out["id"], back["id"]]
    hold = await network.client.post(
        "/v1/holds",
        json={
            "segments": [{"flight_id": s["flight_id"], "booking_class": s["booking_class"]} for s in segs],
            "passengers": {"adults": 1},
        },
    )
    assert hold.status_code == 201 and len(hold.json()["segments"]) == 2
    assert hold.json()["total"]["amount"] == offers["items"][0]["total"]["amount"]


async def test_segments_out_of_travel_order_are_refused_and_take_no_seats(network: Network) -> None:
    out = await network.flight(origin="CPH", destination="LHR", days=3)
    back = await network.flight(origin="LHR", destination="CPH", days=6)
    r = await network.client.post(
        "/v1/holds",
        json={
            "segments": [
                {"flight_id": back["id"], "booking_class": "M"},
                {"flight_id": out["id"], "booking_class": "M"},
            ],
            "passengers": {"adults": 1},
        },
    )
    assert r.status_code == 422
    assert await _seats_available(network.client, out["id"]) == 60
    assert await _seats_available(network.client, back["id"]) == 60


async def test_list_orders_filters_by_status(network: Network) -> None:
    flight = await network.flight()
    a = (await network.hold(flight["id"])).json()
    b = (await network.hold(flight["id"])).json()
    await _confirm(network.client, b["id"], [adult()])
    held = (await network.client.get("/v1/orders", params={"status": "held"})).json()
    assert [o["id"] for o in held["items"]] == [a["id"]]
    everything = (await network.client.get("/v1/orders", params={"flight_id": flight["id"]})).json()
    assert everything["page_info"]["total"] == 2

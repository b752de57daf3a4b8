"""Races a reservation system must win: the last seats, one idempotency key, paying in parallel."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import sqlalchemy as sa

from skybook.booking.tables import orders
from skybook.bootstrap import Container
from tests.conftest import CARD_OK, Network, adult


async def test_last_50_seats_go_to_exactly_50_of_200_concurrent_holds(network: Network, container: Container) -> None:
    fares = [{"booking_class": "Y", "cabin": "Y", "amount": 30000, "currency": "EUR", "seat_limit": 60}]
    flight = await network.flight(fares=fares)
    first = await network.hold(flight["id"], "Y", adults=9)
    second = await network.hold(flight["id"], "Y", adults=1)
    assert first.status_code == second.status_code == 201  # 10 of 60 gone: 50 left

    answers = await asyncio.gather(*(network.hold(flight["id"], "Y") for _ in range(200)))

    statuses = Counter(r.status_code for r in answers)
    assert statuses == {201: 50, 409: 150}, statuses
    assert {r.json()["code"] for r in answers if r.status_code == 409} == {"sold_out"}
    assert all(r.headers["content-type"] == "application/problem+json" for r in answers if r.status_code == 409)
    cabin = next(
        c for c in (await network.client.get(f"/v1/flights/{flight['id']}")).json()["cabins"] if c["cabin"] == "Y"
    )
    assert (cabin["held"], cabin["seats_available"]) == (60, 0)
    async with container.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(orders)) == 52


async def test_concurrent_requests_with_one_idempotency_key_create_one_hold(
    network: Network, container: Container
) -> None:
    flight = await network.flight()
    key = str(uuid.uuid4())
    answers = await asyncio.gather(
        *(network.hold(flight["id"], "M", headers={"Idempotency-Key": key}) for _ in range(20))
    )
    created = [r for r in answers if r.status_code == 201]
    busy = [r for r in answers if r.status_code == 409]
    assert len(created) + len(busy) == 20
    assert created, "at least the first request succeeds"
    assert len({r.json()["id"] for r in created}) == 1  # replays carry the same hold
    assert all(r.json()["code"] == "idempotency_in_progress" and r.headers["retry-after"] for r in busy)
    async with container.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(orders)) == 1

    replay = await network.hold(flight["id"], "M", headers={"Idempotency-Key": key})
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == created[0].json()


async def test_same_idempotency_key_with_another_body_is_rejected(network: Network) -> None:
    flight = await network.flight()
    key = str(uuid.uuid4())
    assert (await network.hold(flight["id"], "M", headers={"Idempotency-Key": key})).status_code == 201
    other = await network.hold(flight["id"], "Y", headers={"Idempotency-Key": key})
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"


async def test_idempotent_replay_of_a_refusal_returns_the_same_refusal(network: Network) -> None:
    flight = await network.flight()
    key = str(uuid.uuid4())
    first = await network.hold(flight["id"], "Q", adults=6, headers={"Idempotency-Key": key})  # Q has 5 seats
    assert first.status_code == 409
    again = await network.hold(flight["id"], "Q", adults=6, headers={"Idempotency-Key": key})
    assert (again.status_code, again.json()) == (409, first.json())


async def test_two_concurrent_payments_of_one_order_charge_once(network: Network, payments: object) -> None:
    flight = await network.flight()
    hold = (await network.hold(flight["id"])).json()
    await network.client.post(
        "/v1/orders", json={"hold_id": hold["id"], "passengers": [adult()], "contact": {"email": "a@example.com"}}
    )
    answers = await asyncio.gather(
        *(network.client.post(f"/v1/orders/{hold['id']}/payments", json={"card": CARD_OK}) for _ in range(5))
    )
    codes = Counter(r.status_code for r in answers)
    assert codes[200] == 1, [r.text for r in answers]
    assert {r.json()["code"] for r in answers if r.status_code != 200} <= {"payment_in_progress", "already_paid"}
    assert [c for c, _ in payments.calls].count("capture") == 1  # type: ignore[attr-defined]
    order = (await network.client.get(f"/v1/orders/{hold['id']}")).json()
    assert order["status"] == "ticketed" and len(order["tickets"]) == 1


async def test_two_passengers_never_share_a_seat(network: Network) -> None:
    flight = await network.flight()
    seated = []
    for name in ("Anna", "Bo"):
        hold = (await network.hold(flight["id"])).json()
        order = (
            await network.client.post(
                "/v1/orders",
                json={"hold_id": hold["id"], "passengers": [adult(name)], "contact": {"email": "a@example.com"}},
            )
        ).json()
        seated.append(order)
    answers = await asyncio.gather(
        *(
            network.client.post(
                f"/v1/orders/{o['id']}/seats",
                json={"seats": [{"passenger_id": o["passengers"][0]["id"], "flight_id": flight["id"], "seat": "5C"}]},
            )
            for o in seated
        )
    )
    assert sorted(r.status_code for r in answers) == [200, 409]
    loser = next(r for r in answers if r.status_code == 409)
    assert loser.json()["code"] == "seat_unavailable"
    seat_map = (await network.client.get(f"/v1/flights/{flight['id']}/seat-map")).json()
    taken = [s["number"] for c in seat_map["cabins"] for s in c["seats"] if not s["available"]]
    assert taken == ["5C"]


async def test_orders_paid_at_the_same_time_get_distinct_ticket_numbers(network: Network) -> None:
    flight = await network.flight()
    holds = [(await network.hold(flight["id"], adults=2)).json()["id"] for _ in range(8)]
    for hold_id in holds:
        r = await network.client.post(
            "/v1/orders",
            json={
                "hold_id": hold_id,
                "passengers": [adult("Anna"), adult("Bo")],
                "contact": {"email": "a@example.com"},
            },
        )
        assert r.status_code == 201, r.text
    paid = await asyncio.gather(
        *(network.client.post(f"/v1/orders/{h}/payments", json={"card": CARD_OK}) for h in holds)
    )
    assert all(r.status_code == 200 for r in paid), [r.text for r in paid if r.status_code != 200]
    numbers = [t["number"] for r in paid for t in r.json()["tickets"]]
    assert len(numbers) == 16
    assert len(set(numbers)) == 16
    assert all(len(n) == 13 and n.startswith("987") for n in numbers)

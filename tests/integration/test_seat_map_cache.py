"""Seat-map cache: a seat assigned (or freed) is shown once its event is handled, choosing a seat
never trusts the cache, one recomputation per flight at a time, and Redis trouble never fails a
seat map.

Each test runs with the in-memory adapter and with Redis (skipped locally when Redis is not
running, a failure with CI=true), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

import skybook.booking.seat_maps as seat_maps
from skybook.bootstrap import Container
from skybook.platform.cache import RedisStore
from tests.conftest import Network, adult
from tests.integration.conftest import Recomputations


def _metric(result: str) -> float:
    return REGISTRY.get_sample_value("skybook_cache_requests_total", {"cache": "seat_map", "result": result}) or 0.0


async def _seat_map(client: httpx.AsyncClient, flight_id: str) -> httpx.Response:
    return await client.get(f"/v1/flights/{flight_id}/seat-map")


def _taken(seat_map: httpx.Response) -> set[str]:
    assert seat_map.status_code == 200, seat_map.text
    return {s["number"] for c in seat_map.json()["cabins"] for s in c["seats"] if not s["available"]}


async def _database_taken(container: Container, flight_id: str) -> set[str]:
    """The taken seats as the database says, bypassing the cache."""
    async with container.engine.connect() as conn:
        body = await seat_maps.render_seat_map(conn, uuid.UUID(flight_id))
    return {
        s["number"]
        for c in httpx.Response(200, content=body).json()["cabins"]
        for s in c["seats"]
        if not s["available"]
    }


async def _confirmed_order(network: Network, flight_id: str, names: tuple[str, ...] = ("Anna",)) -> dict[str, Any]:
    hold = (await network.hold(flight_id, adults=len(names))).json()
    r = await network.client.post(
        "/v1/orders",
        json={"hold_id": hold["id"], "passengers": [adult(n) for n in names], "contact": {"email": "a@example.com"}},
    )
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    return order


async def _seat(network: Network, order: dict[str, Any], flight_id: str, seat: str, who: int = 0) -> httpx.Response:
    body = {"seats": [{"passenger_id": order["passengers"][who]["id"], "flight_id": flight_id, "seat": seat}]}
    return await network.client.post(f"/v1/orders/{order['id']}/seats", json=body)


async def test_a_repeated_seat_map_is_a_hit_with_the_identical_body(
    cached: Container, network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    flight = await network.flight()
    await cached.dispatcher.drain()
    db = Recomputations(monkeypatch, seat_maps, "render_seat_map")
    hits = _metric("hit")

    first = await _seat_map(network.client, flight["id"])
    second = await _seat_map(network.client, flight["id"])

    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert second.content == first.content
    assert first.json()["flight_id"] == flight["id"]
    assert db.count == 1
    assert _metric("hit") == hits + 1


async def test_after_a_seat_assignment_and_its_event_the_seat_map_never_shows_the_seat_free(
    cached: Container, network: Network
) -> None:
    flight = await network.flight()
    other = await network.flight(days=4)
    order = await _confirmed_order(network, flight["id"], ("Anna", "Bo"))
    await cached.dispatcher.drain()
    assert _taken(await _seat_map(network.client, flight["id"])) == set()
    untouched = (await _seat_map(network.client, other["id"])).content

    assert (await _seat(network, order, flight["id"], "5C")).status_code == 200
    await cached.dispatcher.drain()  # the seat.assigned event is handled

    hits = _metric("hit")
    assert (
        _taken(await _seat_map(network.client, flight["id"])) == {"5C"} == await _database_taken(cached, flight["id"])
    )
    assert _metric("hit") == hits + 1  # the consumer already recomputed it (refresh-ahead)

    # Moving the passenger frees the old seat; seating the second takes another.
    assert (await _seat(network, order, flight["id"], "6A")).status_code == 200
    assert (await _seat(network, order, flight["id"], "5C", who=1)).status_code == 200
    await cached.dispatcher.drain()
    assert _taken(await _seat_map(network.client, flight["id"])) == {"5C", "6A"}
    # Another flight's cached seat map was not thrown away.
    assert (await _seat_map(network.client, other["id"])).content == untouched


async def test_a_cancelled_order_frees_its_seats_on_the_cached_map_once_its_event_is_handled(
    cached: Container, network: Network
) -> None:
    flight = await network.flight()
    order = await _confirmed_order(network, flight["id"])
    assert (await _seat(network, order, flight["id"], "7A")).status_code == 200
    await cached.dispatcher.drain()
    assert _taken(await _seat_map(network.client, flight["id"])) == {"7A"}

    assert (await network.client.post(f"/v1/orders/{order['id']}/cancel")).status_code == 200
    await cached.dispatcher.drain()  # inventory.changed (cancelled)

    assert _taken(await _seat_map(network.client, flight["id"])) == set() == await _database_taken(cached, flight["id"])


async def test_choosing_a_seat_checks_the_database_not_a_stale_cached_seat_map(
    cached: Container, network: Network
) -> None:
    flight = await network.flight()
    first = await _confirmed_order(network, flight["id"], ("Anna",))
    second = await _confirmed_order(network, flight["id"], ("Bo",))
    await cached.dispatcher.drain()
    assert "9C" not in _taken(await _seat_map(network.client, flight["id"]))
    assert (await _seat(network, first, flight["id"], "9C")).status_code == 200
    # The event is not handled yet, so the cached map may still show 9C free; choosing does not ask it.
    taken = await _seat(network, second, flight["id"], "9C")
    assert taken.status_code == 409
    assert taken.json()["code"] == "seat_unavailable"


async def test_concurrent_identical_seat_map_misses_compute_once(
    cached: Container, network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    flight = await network.flight()
    await cached.dispatcher.drain()
    db = Recomputations(monkeypatch, seat_maps, "render_seat_map", delay=0.05)

    answers = await asyncio.gather(*(_seat_map(network.client, flight["id"]) for _ in range(20)))

    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert db.count == 1


async def test_an_unknown_flight_is_a_404_and_is_not_cached(cached: Container, network: Network) -> None:
    missing = "0190f0f0-0000-7000-8000-000000000000"
    for _ in range(2):
        r = await _seat_map(network.client, missing)
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"


async def test_a_seat_map_still_answers_200_when_redis_is_unreachable(
    container: Container, network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    flight = await network.flight()
    order = await _confirmed_order(network, flight["id"])
    assert (await _seat(network, order, flight["id"], "5C")).status_code == 200
    container.cache.store = RedisStore("redis://127.0.0.1:1/0", prefix="unreachable", timeout_ms=200)
    container.cache.ttl_seconds = 60
    db = Recomputations(monkeypatch, seat_maps, "render_seat_map")
    errors = _metric("error")

    first = await _seat_map(network.client, flight["id"])
    second = await _seat_map(network.client, flight["id"])

    assert first.status_code == second.status_code == 200
    assert _taken(first) == _taken(second) == {"5C"}
    assert db.count == 2  # both answered from the database
    assert _metric("error") == errors + 2
    await container.cache.close()

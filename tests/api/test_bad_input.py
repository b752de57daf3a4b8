"""Bad input never gives a 500 and never leaves partial state.

Every refusal is a 4xx ``application/problem+json`` document with a stable ``code``, and after
a refused write the system looks exactly as before: the same seat counts, fares, orders,
seats, payments, airports, aircraft types and outbox events (see ``footprint``).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from skybook.bootstrap import Container
from skybook.payments import SandboxPaymentProvider
from skybook.payments import payments as payment_rows
from skybook.platform.outbox import outbox
from tests.conftest import CARD_OK, FARES, SMALL_JET, Identities, Network, Party, adult

PROBLEM_JSON = "application/problem+json"
MAX_BODY = 256 * 1024
UNKNOWN_ID = "00000000-0000-7000-8000-000000000000"

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the problem document we expect; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"].startswith("https://")
    return body


def assert_client_error(response: httpx.Response) -> dict[str, Any]:
    """A 4xx problem document with some stable code: the server neither crashed nor accepted it."""
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("code"), str) and body["code"], body
    return body


def error_locations(problem: dict[str, Any]) -> list[list[str]]:
    return [e["loc"] for e in problem.get("errors", [])]


async def _count(container: Container, table: sa.Table) -> int:
    async with container.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


async def footprint(client: httpx.AsyncClient, container: Container) -> dict[str, Any]:
    """Everything a refused request could have touched, as the API (and the outbox) shows it."""
    flights = (await client.get("/v1/flights", params={"page_size": 100})).json()
    orders = (await client.get("/v1/orders", params={"page_size": 100})).json()
    assert flights["page_info"]["total"] <= 100 and orders["page_info"]["total"] <= 100
    return {
        "seats_available": {f["id"]: {c["cabin"]: c["seats_available"] for c in f["cabins"]} for f in flights["items"]},
        "fares": {
            f["id"]: [
                (b["code"], b["fare"]["amount"], b["seat_limit"], b["is_open"])
                for c in f["cabins"]
                for b in c["booking_classes"]
            ]
            for f in flights["items"]
        },
        "flights": flights["page_info"]["total"],
        "orders": orders["page_info"]["total"],
        "order_states": {
            o["id"]: (
                o["status"],
                [(p["id"], [s["seat"] for s in p["seats"]]) for p in o["passengers"]],
                len(o["tickets"]),
            )
            for o in orders["items"]
        },
        "airports": (await client.get("/v1/airports")).json()["page_info"]["total"],
        "aircraft_types": (await client.get("/v1/aircraft-types")).json()["page_info"]["total"],
        "payments": await _count(container, payment_rows),
        "outbox": await _count(container, outbox),
    }


@dataclass
class World:
    """A flight with a live hold and a confirmed (unpaid) order on it.

    Requests go out as a platform admin, who may call every route: these tests are about input,
    not about who may do what (tests/security covers that).
    """

    network: Network
    container: Container
    admin: httpx.AsyncClient
    flight: dict[str, Any]
    hold_id: str
    order_id: str
    passenger_id: str
    record_locator: str

    @property
    def client(self) -> httpx.AsyncClient:
        return self.admin

    async def footprint(self) -> dict[str, Any]:
        return await footprint(self.client, self.container)

    def hold_body(self, adults: int = 1, children: int = 0, infants: int = 0) -> dict[str, Any]:
        return {
            "segments": [{"flight_id": self.flight["id"], "booking_class": "M"}],
            "passengers": {"adults": adults, "children": children, "infants": infants},
        }

    def search_params(self, **overrides: Any) -> dict[str, Any]:
        return {"origin": "CPH", "destination": "LHR", "departure_date": self.flight["departure_date"], **overrides}

    def infant(self) -> dict[str, str]:
        born = self.network.clock.now().date() - timedelta(days=200)
        return {"type": "INF", "given_name": "Cy", "family_name": "Jensen", "date_of_birth": born.isoformat()}


async def hold(network: Network, flight_id: str, **party: int) -> str:
    r = await network.hold(flight_id, **party)
    assert r.status_code == 201, r.text
    hold_id: str = r.json()["id"]
    return hold_id


async def confirm(client: httpx.AsyncClient, hold_id: str, passengers: list[dict[str, str]]) -> dict[str, Any]:
    r = await client.post(
        "/v1/orders",
        json={"hold_id": hold_id, "passengers": passengers, "contact": {"email": "anna@example.com"}},
    )
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    return order


@pytest.fixture
async def world(
    network: Network,
    container: Container,
    clients: Callable[[Party | None], httpx.AsyncClient],
    identities: Identities,
) -> World:
    flight = await network.flight()
    hold_id = await hold(network, flight["id"])
    order_hold = await hold(network, flight["id"])
    order = await confirm(network.client, order_hold, [adult()])
    return World(
        network=network,
        container=container,
        admin=clients(identities.admin),
        flight=flight,
        hold_id=hold_id,
        order_id=order["id"],
        passenger_id=order["passengers"][0]["id"],
        record_locator=order["record_locator"],
    )


# One valid request per write endpoint: (method, path, body). Tests break them in one place each.
WriteRequest = tuple[str, str, dict[str, Any]]


def _flight_body(w: World) -> dict[str, Any]:
    dep = w.network.clock.now().replace(microsecond=0) + timedelta(days=9)
    return {
        "carrier": "XB",
        "flight_number": "4242",
        "origin": "CPH",
        "destination": "LHR",
        "departure_at": dep.isoformat(),
        "arrival_at": (dep + timedelta(hours=2)).isoformat(),
        "aircraft": "T60",
        "fares": copy.deepcopy(FARES),
        "overbooking": {"Y": 1},
    }


def _schedule_body(w: World) -> dict[str, Any]:
    start = w.network.clock.now().date() + timedelta(days=20)
    return {
        "carrier": "XB",
        "period_start": start.isoformat(),
        "period_end": (start + timedelta(days=2)).isoformat(),
        "flights": [
            {
                "flight_number": "77",
                "origin": "CPH",
                "destination": "LHR",
                "departure_time": "07:05",
                "arrival_time": "08:00",
                "days_of_week": [1, 2, 3, 4, 5, 6, 7],
                "aircraft": "T60",
                "fares": copy.deepcopy(FARES[:1]),
            }
        ],
    }


WRITES: dict[str, Callable[[World], WriteRequest]] = {
    "hold": lambda w: ("POST", "/v1/holds", w.hold_body()),
    "order": lambda w: (
        "POST",
        "/v1/orders",
        {"hold_id": w.hold_id, "passengers": [adult()], "contact": {"email": "anna@example.com"}},
    ),
    "payment": lambda w: ("POST", f"/v1/orders/{w.order_id}/payments", {"card": dict(CARD_OK)}),
    "seats": lambda w: (
        "POST",
        f"/v1/orders/{w.order_id}/seats",
        {"seats": [{"passenger_id": w.passenger_id, "flight_id": w.flight["id"], "seat": "5A"}]},
    ),
    "lookup": lambda w: ("POST", "/v1/orders/lookup", {"record_locator": w.record_locator, "family_name": "Jensen"}),
    "airport": lambda w: (
        "POST",
        "/v1/airports",
        {
            "iata": "ARN",
            "name": "Stockholm Arlanda",
            "city": "Stockholm",
            "country": "SE",
            "time_zone": "Europe/Stockholm",
        },
    ),
    "aircraft_type": lambda w: ("POST", "/v1/aircraft-types", {**copy.deepcopy(SMALL_JET), "code": "T61"}),
    "flight": lambda w: ("POST", "/v1/flights", _flight_body(w)),
    "schedule": lambda w: ("POST", "/v1/schedules/import", _schedule_body(w)),
    "booking_class": lambda w: ("PATCH", f"/v1/flights/{w.flight['id']}/booking-classes/M", {"amount": 17900}),
}


def _with(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A copy of ``body`` with ``value`` set at ``path`` (keys and list indexes)."""
    out = copy.deepcopy(body)
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


async def send(client: httpx.AsyncClient, request: WriteRequest, **kw: Any) -> httpx.Response:
    method, path, body = request
    if "content" in kw:
        return await client.request(method, path, **kw)
    return await client.request(method, path, json=body, **kw)


# --------------------------------------------------------------------------------------------
# The wire: JSON, media type, body size
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", sorted(WRITES))
async def test_malformed_json_answers_400_malformed_json_and_changes_nothing(world: World, endpoint: str) -> None:
    before = await world.footprint()
    r = await send(
        world.client, WRITES[endpoint](world), content=b'{"segments": [', headers={"content-type": "application/json"}
    )
    assert_problem(r, 400, "malformed_json")
    assert await world.footprint() == before


NOT_JSON = [
    *[("hold", ct) for ct in ("text/plain", "application/x-www-form-urlencoded", "text/json", "application/xml", None)],
    *[(endpoint, "text/plain") for endpoint in ("order", "payment", "lookup", "flight", "booking_class")],
]


@pytest.mark.parametrize(
    ("endpoint", "content_type"), NOT_JSON, ids=[f"{e}-{ct or 'no-content-type'}" for e, ct in NOT_JSON]
)
async def test_a_body_that_is_not_sent_as_json_answers_415(
    world: World, endpoint: str, content_type: str | None
) -> None:
    # The bytes are valid JSON: the declared media type alone is wrong.
    request = WRITES[endpoint](world)
    before = await world.footprint()
    headers = {"content-type": content_type} if content_type else {}
    r = await send(world.client, request, content=json.dumps(request[2]).encode(), headers=headers)
    assert_problem(r, 415, "unsupported_media_type")
    assert await world.footprint() == before


@pytest.mark.parametrize("endpoint", ["hold", "order", "payment", "booking_class"])
async def test_a_write_without_any_body_answers_422_naming_the_missing_body(world: World, endpoint: str) -> None:
    method, path, _ = WRITES[endpoint](world)
    before = await world.footprint()
    problem = assert_problem(await world.client.request(method, path), 422, "validation_error")
    assert ["body"] in error_locations(problem)
    assert await world.footprint() == before


@pytest.mark.parametrize("endpoint", ["hold", "order", "lookup", "flight", "booking_class"])
async def test_a_body_over_the_limit_with_a_content_length_answers_413(world: World, endpoint: str) -> None:
    method, path, body = WRITES[endpoint](world)
    oversized = json.dumps({**body, "padding": "x" * MAX_BODY}).encode()
    before = await world.footprint()
    r = await world.client.request(method, path, content=oversized, headers={"content-type": "application/json"})
    assert r.request.headers["content-length"] == str(len(oversized))
    assert_problem(r, 413, "payload_too_large")
    assert await world.footprint() == before


@pytest.mark.parametrize("endpoint", ["hold", "order", "lookup", "flight", "booking_class"])
async def test_a_chunked_body_of_unknown_length_over_the_limit_answers_413(world: World, endpoint: str) -> None:
    method, path, body = WRITES[endpoint](world)
    start = json.dumps(body).encode()[:-1] + b', "padding": "'

    async def chunks() -> AsyncIterator[bytes]:
        yield start
        for _ in range(MAX_BODY // 16_384 + 2):
            yield b"x" * 16_384
        yield b'"}'

    before = await world.footprint()
    r = await world.client.request(method, path, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_problem(r, 413, "payload_too_large")
    assert await world.footprint() == before


async def test_a_body_just_under_the_limit_is_parsed_not_refused_for_size(world: World) -> None:
    # The limit is about size: a large but acceptable body reaches validation (here: 422 for padding).
    method, path, body = WRITES["hold"](world)
    content = json.dumps({**body, "padding": ""}).encode()
    content = json.dumps({**body, "padding": "x" * (MAX_BODY - len(content) - 1)}).encode()
    assert len(content) < MAX_BODY
    r = await world.client.request(method, path, content=content, headers={"content-type": "application/json"})
    problem = assert_problem(r, 422, "validation_error")
    assert ["body", "padding"] in error_locations(problem)


# --------------------------------------------------------------------------------------------
# Schema validation: wrong types, unknown fields, bounds
# --------------------------------------------------------------------------------------------

WRONG_TYPES: list[tuple[str, tuple[str | int, ...], Any]] = [
    ("hold", ("segments",), "CPH-LHR"),
    ("hold", ("passengers", "adults"), "two"),
    ("hold", ("segments", 0, "flight_id"), 42),
    ("order", ("passengers",), {"type": "ADT"}),
    ("order", ("passengers", 0, "date_of_birth"), "last spring"),
    ("order", ("contact", "email"), "not an e-mail"),
    ("payment", ("card", "exp_month"), "December"),
    ("payment", ("card",), "4242424242424242"),
    ("seats", ("seats", 0, "seat"), 14),
    ("lookup", ("record_locator",), 123456),
    ("flight", ("departure_at",), "tomorrow morning"),
    ("flight", ("fares", 0, "amount"), "a lot"),
    ("schedule", ("flights", 0, "days_of_week"), "weekdays"),
    ("booking_class", ("is_open",), "perhaps"),
]


@pytest.mark.parametrize(
    ("endpoint", "path", "value"), WRONG_TYPES, ids=[f"{e}.{'.'.join(map(str, p))}" for e, p, _ in WRONG_TYPES]
)
async def test_a_field_of_the_wrong_type_answers_422_validation_error_naming_it(
    world: World, endpoint: str, path: tuple[str | int, ...], value: Any
) -> None:
    method, url, body = WRITES[endpoint](world)
    before = await world.footprint()
    r = await send(world.client, (method, url, _with(body, path, value)))
    problem = assert_problem(r, 422, "validation_error")
    locations = error_locations(problem)
    assert any(loc[: len(path) + 1] == ["body", *map(str, path)] for loc in locations), locations
    assert await world.footprint() == before


UNKNOWN_FIELDS: list[tuple[str, tuple[str | int, ...]]] = [
    ("hold", ("x",)),
    ("hold", ("segments", 0, "x")),
    ("hold", ("passengers", "x")),
    ("order", ("x",)),
    ("order", ("passengers", 0, "x")),
    ("order", ("contact", "x")),
    ("payment", ("x",)),
    ("payment", ("card", "x")),
    ("seats", ("x",)),
    ("seats", ("seats", 0, "x")),
    ("lookup", ("x",)),
    ("airport", ("x",)),
    ("aircraft_type", ("x",)),
    ("aircraft_type", ("cabins", 0, "x")),
    ("flight", ("x",)),
    ("flight", ("fares", 0, "x")),
    ("schedule", ("x",)),
    ("schedule", ("flights", 0, "x")),
    ("schedule", ("flights", 0, "fares", 0, "x")),
    ("booking_class", ("x",)),
]


@pytest.mark.parametrize(
    ("endpoint", "path"), UNKNOWN_FIELDS, ids=[f"{e}.{'.'.join(map(str, p))}" for e, p in UNKNOWN_FIELDS]
)
async def test_an_unknown_field_is_rejected_with_422_not_ignored(
    world: World, endpoint: str, path: tuple[str | int, ...]
) -> None:
    request = WRITES[endpoint](world)
    method, url, body = request
    before = await world.footprint()
    r = await send(world.client, (method, url, _with(body, path, "surprise")))
    problem = assert_problem(r, 422, "validation_error")
    assert ["body", *map(str, path)] in error_locations(problem)
    assert await world.footprint() == before
    # The same request without the unknown field is accepted: the field alone caused the refusal.
    accepted = await send(world.client, request)
    assert accepted.status_code in (200, 201), accepted.text


@pytest.mark.parametrize(
    ("party", "status", "code"),
    [
        pytest.param({"adults": 0}, 422, "invalid_request", id="no-passengers"),
        pytest.param({"adults": 10_000}, 422, "validation_error", id="ten-thousand-adults"),
        pytest.param({"adults": 1, "children": 10_000}, 422, "validation_error", id="ten-thousand-children"),
        pytest.param({"adults": -1}, 422, "validation_error", id="negative-adults"),
        pytest.param({"adults": 5, "children": 5}, 422, "too_many_passengers", id="ten-passengers-within-bounds"),
        pytest.param({"adults": 5, "children": 4, "infants": 1}, 422, "too_many_passengers", id="ten-with-an-infant"),
        pytest.param({"adults": 1, "infants": 2}, 422, "invalid_request", id="more-infants-than-adults"),
        pytest.param({"adults": 0, "children": 2}, 422, "invalid_request", id="children-without-an-adult"),
    ],
)
async def test_an_impossible_party_is_refused_by_holds_and_search_alike(
    world: World, party: dict[str, int], status: int, code: str
) -> None:
    full_party = {"adults": 1, "children": 0, "infants": 0, **party}
    before = await world.footprint()
    held = await world.client.post("/v1/holds", json={**world.hold_body(), "passengers": full_party})
    assert_problem(held, status, code)
    assert await world.footprint() == before
    searched = await world.client.get("/v1/offers", params=world.search_params(**full_party))
    assert_problem(searched, status, code)


async def test_nine_passengers_is_the_most_one_booking_takes(world: World) -> None:
    # The boundary the refusals above sit on: 9 travel together, 10 do not.
    r = await world.client.post("/v1/holds", json=world.hold_body(adults=5, children=4))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("path", ["/v1/offers", "/v1/orders", "/v1/flights", "/v1/airports", "/v1/aircraft-types"])
async def test_page_size_outside_1_to_100_answers_422(world: World, path: str) -> None:
    params = world.search_params() if path == "/v1/offers" else {}
    for page_size in (101, 10_000, 10**30, 0, -1):
        r = await world.client.get(path, params={**params, "page_size": page_size})
        problem = assert_problem(r, 422, "validation_error")
        assert ["query", "page_size"] in error_locations(problem), page_size
    assert (await world.client.get(path, params={**params, "page_size": 100})).status_code == 200


@pytest.mark.parametrize("param", ["foo", "passengers", "sort", "adult"])
async def test_an_unknown_query_parameter_on_search_answers_422(world: World, param: str) -> None:
    # A misspelt parameter (adult for adults) must not silently search for the default party.
    r = await world.client.get("/v1/offers", params=world.search_params(**{param: "2"}))
    problem = assert_problem(r, 422, "validation_error")
    assert ["query", param] in error_locations(problem)


# --------------------------------------------------------------------------------------------
# Domain validation: airports, dates, ids, booking classes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("origin", "destination"), [("ZZZ", "LHR"), ("CPH", "QQQ")])
async def test_an_unknown_airport_in_search_answers_422_unknown_airport(
    world: World, origin: str, destination: str
) -> None:
    r = await world.client.get("/v1/offers", params=world.search_params(origin=origin, destination=destination))
    problem = assert_problem(r, 422, "unknown_airport")
    assert problem["airports"] == [c for c in (origin, destination) if c not in ("CPH", "LHR")]


@pytest.mark.parametrize(("field", "code"), [("origin", "ZZZ"), ("destination", "QQQ")])
async def test_an_unknown_airport_in_flight_creation_answers_422_and_creates_nothing(
    world: World, field: str, code: str
) -> None:
    method, path, body = WRITES["flight"](world)
    before = await world.footprint()
    r = await send(world.client, (method, path, {**body, field: code}))
    problem = assert_problem(r, 422, "unknown_airport")
    assert problem["airports"] == [code]
    assert await world.footprint() == before


@pytest.mark.parametrize("days_ago", [1, 365, 365 * 30])
async def test_a_departure_date_in_the_past_answers_422_date_in_past(world: World, days_ago: int) -> None:
    day = world.network.clock.now().date() - timedelta(days=days_ago)
    r = await world.client.get("/v1/offers", params=world.search_params(departure_date=day.isoformat()))
    assert_problem(r, 422, "date_in_past")


async def test_a_flight_departing_in_the_past_is_not_published(world: World) -> None:
    method, path, body = WRITES["flight"](world)
    dep = world.network.clock.now() - timedelta(hours=1)
    before = await world.footprint()
    r = await send(
        world.client,
        (method, path, {**body, "departure_at": dep.isoformat(), "arrival_at": (dep + timedelta(hours=2)).isoformat()}),
    )
    assert_problem(r, 422, "date_in_past")
    assert await world.footprint() == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("departure_at", "9999-12-31T23:00:00-12:00"),
        ("arrival_at", "9999-12-31T23:59:00-12:00"),
        ("departure_at", "2100-01-01T00:00:00+00:00"),
    ],
)
async def test_a_flight_at_the_end_of_time_is_refused_not_a_crash(world: World, field: str, value: str) -> None:
    # Found by this suite: converting 9999-12-31 at UTC-12 to local time overflowed into a 500.
    method, path, body = WRITES["flight"](world)
    before = await world.footprint()
    r = await send(world.client, (method, path, {**body, field: value}))
    problem = assert_problem(r, 422, "validation_error")
    assert ["body", field] in error_locations(problem)
    assert await world.footprint() == before


@pytest.mark.parametrize(
    "path",
    [("period_end",), ("period_start",), ("flights", 0, "period_end")],
    ids=["period_end", "period_start", "line.period_end"],
)
async def test_a_schedule_at_the_end_of_time_is_refused_not_a_crash(world: World, path: tuple[str | int, ...]) -> None:
    # Found by this suite: a schedule ending 9999-12-31 with a next-day arrival overflowed into a 500.
    method, url, body = WRITES["schedule"](world)
    body = _with(body, ("flights", 0, "arrival_day_offset"), 2)
    body = {**body, "period_start": "9999-12-30", "period_end": "9999-12-31"} if path[0] != "flights" else body
    body = _with(body, path, "9999-12-31")
    before = await world.footprint()
    r = await send(world.client, (method, url, body))
    problem = assert_problem(r, 422, "validation_error")
    assert ["body", *map(str, path)] in error_locations(problem)
    assert await world.footprint() == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/holds/not-a-uuid"),
        ("POST", "/v1/holds/not-a-uuid/release"),
        ("GET", "/v1/orders/12345"),
        ("POST", "/v1/orders/12345/cancel"),
        ("POST", "/v1/orders/DROP%20TABLE%20orders/payments"),
        ("POST", "/v1/orders/%00/seats"),
        ("GET", "/v1/flights/not-a-uuid"),
        ("GET", "/v1/flights/not-a-uuid/seat-map"),
        ("POST", "/v1/flights/not-a-uuid/cancel"),
        ("PATCH", "/v1/flights/not-a-uuid/booking-classes/M"),
    ],
)
async def test_a_non_uuid_id_in_a_path_answers_422(world: World, method: str, path: str) -> None:
    before = await world.footprint()
    r = await world.client.request(method, path, json=None if method == "GET" else {})
    problem = assert_problem(r, 422, "validation_error")
    assert any(loc[0] == "path" for loc in error_locations(problem)), problem
    assert await world.footprint() == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/flights/{id}"),
        ("GET", "/v1/flights/{id}/seat-map"),
        ("POST", "/v1/flights/{id}/cancel"),
        ("GET", "/v1/holds/{id}"),
        ("POST", "/v1/holds/{id}/release"),
        ("GET", "/v1/orders/{id}"),
        ("POST", "/v1/orders/{id}/cancel"),
        ("POST", "/v1/orders/{id}/payments"),
    ],
)
async def test_an_unknown_id_answers_404_not_found(world: World, method: str, path: str) -> None:
    before = await world.footprint()
    body = {"card": CARD_OK} if path.endswith("/payments") else None
    r = await world.client.request(method, path.format(id=UNKNOWN_ID), json=body)
    assert_problem(r, 404, "not_found")
    assert await world.footprint() == before


async def test_holding_an_unknown_flight_answers_404_and_holds_nothing(world: World) -> None:
    before = await world.footprint()
    body = _with(world.hold_body(), ("segments", 0, "flight_id"), UNKNOWN_ID)
    assert_problem(await world.client.post("/v1/holds", json=body), 404, "not_found")
    assert await world.footprint() == before


async def test_an_unknown_booking_class_answers_404_and_holds_nothing(world: World) -> None:
    before = await world.footprint()
    body = _with(world.hold_body(), ("segments", 0, "booking_class"), "Z")
    assert_problem(await world.client.post("/v1/holds", json=body), 404, "not_found")
    patched = await world.client.patch(f"/v1/flights/{world.flight['id']}/booking-classes/Z", json={"amount": 1})
    assert_problem(patched, 404, "not_found")
    assert await world.footprint() == before


async def test_a_round_trip_whose_return_class_is_unknown_takes_no_outbound_seats(world: World) -> None:
    # The outbound seats are taken first; the failing return segment must roll them back too.
    back = await world.network.flight(origin="LHR", destination="CPH", days=6)
    before = await world.footprint()
    r = await world.client.post(
        "/v1/holds",
        json={
            "segments": [
                {"flight_id": world.flight["id"], "booking_class": "M"},
                {"flight_id": back["id"], "booking_class": "Z"},
            ],
            "passengers": {"adults": 2},
        },
    )
    assert_problem(r, 404, "not_found")
    assert await world.footprint() == before


# --------------------------------------------------------------------------------------------
# The order lifecycle: expiry, double payment, cards
# --------------------------------------------------------------------------------------------


async def test_confirming_a_hold_that_expired_answers_409_hold_expired(world: World) -> None:
    world.network.clock.advance(timedelta(seconds=world.container.settings.hold_ttl_seconds + 1))
    method, path, body = WRITES["order"](world)
    before = await world.footprint()
    assert_problem(await send(world.client, (method, path, body)), 409, "hold_expired")
    assert await world.footprint() == before


async def test_paying_an_order_past_its_deadline_answers_409_hold_expired_and_charges_nothing(
    world: World, payments: SandboxPaymentProvider
) -> None:
    world.network.clock.advance(timedelta(seconds=world.container.settings.hold_ttl_seconds + 1))
    before = await world.footprint()
    assert_problem(await send(world.client, WRITES["payment"](world)), 409, "hold_expired")
    assert await world.footprint() == before
    assert payments.calls == []


async def test_paying_twice_answers_409_already_paid_and_charges_once(
    world: World, payments: SandboxPaymentProvider
) -> None:
    request = WRITES["payment"](world)
    assert (await send(world.client, request)).status_code == 200
    before = await world.footprint()
    assert_problem(await send(world.client, request), 409, "already_paid")
    assert await world.footprint() == before
    assert [call for call, _ in payments.calls].count("capture") == 1


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        pytest.param({"number": "4242424242424241"}, "not valid", id="luhn-check-digit-wrong"),
        pytest.param({"number": "1234567890123"}, "not valid", id="luhn-13-digits"),
        pytest.param({"exp_year": 2001, "exp_month": 1}, "expired", id="expired-long-ago"),
    ],
)
async def test_a_bad_card_answers_422_before_the_provider_is_called(
    world: World, payments: SandboxPaymentProvider, card: dict[str, Any], reason: str
) -> None:
    before = await world.footprint()
    r = await world.client.post(f"/v1/orders/{world.order_id}/payments", json={"card": {**CARD_OK, **card}})
    problem = assert_problem(r, 422, "invalid_request")
    assert reason in problem["detail"]
    assert await world.footprint() == before
    assert payments.calls == []


async def test_a_card_that_expired_last_month_is_refused(world: World, payments: SandboxPaymentProvider) -> None:
    today = world.network.clock.now().date()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    before = await world.footprint()
    r = await world.client.post(
        f"/v1/orders/{world.order_id}/payments", json={"card": {**CARD_OK, "exp_year": year, "exp_month": month}}
    )
    assert "expired" in assert_problem(r, 422, "invalid_request")["detail"]
    assert await world.footprint() == before
    assert payments.calls == []


# --------------------------------------------------------------------------------------------
# Seats
# --------------------------------------------------------------------------------------------


async def _seat(w: World, order_id: str, passenger_id: str, seat: str) -> httpx.Response:
    return await w.client.post(
        f"/v1/orders/{order_id}/seats",
        json={"seats": [{"passenger_id": passenger_id, "flight_id": w.flight["id"], "seat": seat}]},
    )


@pytest.mark.parametrize("seat", ["13A", "3G", "99K"])
async def test_a_seat_the_aircraft_does_not_have_answers_422(world: World, seat: str) -> None:
    before = await world.footprint()
    assert_problem(await _seat(world, world.order_id, world.passenger_id, seat), 422, "invalid_request")
    assert await world.footprint() == before


async def test_a_seat_in_another_cabin_answers_409_seat_unavailable(world: World) -> None:
    before = await world.footprint()
    # Row 1 is business; the order booked economy (M).
    assert_problem(await _seat(world, world.order_id, world.passenger_id, "1A"), 409, "seat_unavailable")
    assert await world.footprint() == before


async def test_a_seat_taken_by_another_passenger_answers_409_seat_unavailable(world: World) -> None:
    assert (await _seat(world, world.order_id, world.passenger_id, "5A")).status_code == 200
    other = await confirm(world.client, await hold(world.network, world.flight["id"]), [adult("Bo", "Hansen")])
    before = await world.footprint()
    r = await _seat(world, other["id"], other["passengers"][0]["id"], "5A")
    assert assert_problem(r, 409, "seat_unavailable")["seat"] == "5A"
    assert await world.footprint() == before


async def test_a_refused_seat_change_keeps_every_seat_of_the_request_where_it_was(world: World) -> None:
    # Anna moves 5A -> 6A while Bo asks for Cy's 7A: the whole request fails, Anna keeps 5A.
    hold_id = await hold(world.network, world.flight["id"], adults=2)
    order = await confirm(world.client, hold_id, [adult(), adult("Bo")])
    anna, bo = (p["id"] for p in order["passengers"])
    assert (await _seat(world, order["id"], anna, "5A")).status_code == 200
    assert (await _seat(world, world.order_id, world.passenger_id, "7A")).status_code == 200
    before = await world.footprint()
    r = await world.client.post(
        f"/v1/orders/{order['id']}/seats",
        json={
            "seats": [
                {"passenger_id": anna, "flight_id": world.flight["id"], "seat": "6A"},
                {"passenger_id": bo, "flight_id": world.flight["id"], "seat": "7A"},
            ]
        },
    )
    assert_problem(r, 409, "seat_unavailable")
    assert await world.footprint() == before
    seat_map = (await world.client.get(f"/v1/flights/{world.flight['id']}/seat-map")).json()
    free = {s["number"]: s["available"] for c in seat_map["cabins"] for s in c["seats"]}
    assert (free["5A"], free["6A"], free["7A"]) == (False, True, False)


async def test_an_infant_cannot_be_given_a_seat(world: World) -> None:
    hold_id = await hold(world.network, world.flight["id"], adults=1, infants=1)
    order = await confirm(world.client, hold_id, [adult(), world.infant()])
    infant = next(p["id"] for p in order["passengers"] if p["type"] == "INF")
    before = await world.footprint()
    r = await _seat(world, order["id"], infant, "8C")
    assert "lap" in assert_problem(r, 422, "invalid_request")["detail"]
    assert await world.footprint() == before


# --------------------------------------------------------------------------------------------
# Idempotency-Key
# --------------------------------------------------------------------------------------------


async def test_an_idempotency_key_reused_with_another_body_answers_422_and_holds_nothing_more(world: World) -> None:
    key = {"Idempotency-Key": f"hold-{uuid.uuid4()}"}
    first = await world.client.post("/v1/holds", json=world.hold_body(adults=1), headers=key)
    assert first.status_code == 201
    before = await world.footprint()
    second = await world.client.post("/v1/holds", json=world.hold_body(adults=2), headers=key)
    assert_problem(second, 422, "idempotency_key_reused")
    assert await world.footprint() == before


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("k" * 256, id="256-characters"),
        pytest.param("k" * 10_000, id="10000-characters"),
        pytest.param("", id="empty"),
        pytest.param("tab\tinside", id="control-character"),
    ],
)
async def test_an_invalid_idempotency_key_answers_400_and_the_request_does_not_run(world: World, key: str) -> None:
    before = await world.footprint()
    r = await world.client.post("/v1/holds", json=world.hold_body(), headers={"Idempotency-Key": key})
    assert_problem(r, 400, "invalid_idempotency_key")
    assert await world.footprint() == before


async def test_an_idempotency_key_of_255_characters_is_accepted(world: World) -> None:
    r = await world.client.post("/v1/holds", json=world.hold_body(), headers={"Idempotency-Key": "k" * 255})
    assert r.status_code == 201, r.text


# --------------------------------------------------------------------------------------------
# Hostile input
# --------------------------------------------------------------------------------------------

RAW = "__raw__"  # placeholder replaced by a raw JSON literal that json.dumps cannot produce


def _hostile_bodies(w: World) -> dict[str, dict[str, tuple[dict[str, Any], tuple[str | int, ...]]]]:
    """Per endpoint: a valid body and the place where a hostile value goes (a name where there is one)."""
    return {
        "/v1/holds": {
            "number": (w.hold_body(), ("passengers", "adults")),
            "text": (w.hold_body(), ("segments", 0, "booking_class")),
        },
        "/v1/orders": {
            "number": (WRITES["order"](w)[2], ("passengers", 0, "given_name")),
            "text": (WRITES["order"](w)[2], ("passengers", 0, "family_name")),
        },
        "/v1/orders/lookup": {
            "number": (WRITES["lookup"](w)[2], ("record_locator",)),
            "text": (WRITES["lookup"](w)[2], ("family_name",)),
        },
    }


def _deeply_nested(levels: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * levels + b"]" * levels
    return b'{"a":' * levels + b"1" + b"}" * levels


HOSTILE: list[tuple[str, str, Any, int, str]] = [
    # (id, slot, value, status, code). Slot "body": the value is the whole body; "number" / "text":
    # the value goes into a numeric / string field (bytes are spliced in as raw JSON text).
    ("array-nested-10000-deep", "body", _deeply_nested(10_000, "array"), 400, "malformed_json"),
    ("object-nested-10000-deep", "body", _deeply_nested(10_000, "object"), 400, "malformed_json"),
    ("field-nested-10000-deep", "text", b"[" * 10_000 + b"]" * 10_000, 400, "malformed_json"),
    ("integer-10e30", "number", 10**30, 422, "validation_error"),
    ("integer-minus-10e30", "number", -(10**30), 422, "validation_error"),
    ("integer-with-4000-digits", "number", b"9" * 4000, 422, "validation_error"),
    ("integer-with-5000-digits", "number", b"9" * 5000, 400, "malformed_json"),
    ("NaN-literal", "number", b"NaN", 422, "validation_error"),
    ("Infinity-literal", "number", b"Infinity", 422, "validation_error"),
    ("minus-Infinity-literal", "number", b"-Infinity", 422, "validation_error"),
    ("NaN-as-name", "text", b"NaN", 422, "validation_error"),
    ("name-of-100k-characters", "text", "A" * 100_000, 422, "validation_error"),
    ("escaped-null-byte-in-name", "text", "Jen\x00sen", 422, "validation_error"),
    ("raw-null-byte-in-name", "text", b'"Jen\x00sen"', 400, "malformed_json"),
    ("rtl-override-in-name", "text", "\u202eJensen", 422, "validation_error"),
    ("rtl-isolate-in-name", "text", "Jen\u2067sen\u2069", 422, "validation_error"),
    ("zero-width-space-in-name", "text", "Jen\u200bsen", 422, "validation_error"),
    ("lone-surrogate-in-name", "text", b'"Jen\\ud800sen"', 422, "validation_error"),
    ("invalid-utf8-in-name", "text", b'"Jen\xff\xfesen"', 400, "malformed_json"),
    ("object-as-name", "text", {"$gt": ""}, 422, "validation_error"),
]


def _code(response: httpx.Response) -> str | None:
    try:
        code: str | None = response.json().get("code")
    except ValueError:
        return None
    return code


@pytest.mark.parametrize(("slot", "value", "status", "code"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
async def test_hostile_payloads_are_refused_as_problems_never_a_server_error(
    world: World, slot: str, value: Any, status: int, code: str
) -> None:
    before = await world.footprint()
    wrong: list[str] = []
    for endpoint in ("/v1/holds", "/v1/orders", "/v1/orders/lookup"):
        if slot == "body":
            content = value
        else:
            body, path = _hostile_bodies(world)[endpoint][slot]
            if isinstance(value, bytes):
                content = json.dumps(_with(body, path, RAW)).encode().replace(f'"{RAW}"'.encode(), value)
            else:
                content = json.dumps(_with(body, path, value)).encode()
        assert len(content) < MAX_BODY  # parsing is under test here, not the size limit
        r = await world.client.post(endpoint, content=content, headers={"content-type": "application/json"})
        got = (r.status_code, r.headers.get("content-type"), _code(r))
        if got != (status, PROBLEM_JSON, code):
            wrong.append(f"POST {endpoint}: {got}, wanted {(status, PROBLEM_JSON, code)}: {r.text[:200]}")
    assert not wrong, "\n".join(wrong)
    assert await world.footprint() == before


async def test_hostile_names_in_a_real_confirmation_leave_the_hold_unconfirmed(world: World) -> None:
    # Against a live hold, so a name that slipped through validation would confirm the order.
    method, path, body = WRITES["order"](world)
    before = await world.footprint()
    for name in ["\u202eJensen", "Jen\x00sen", "A" * 100_000, "Jen\u2066sen", "\ufeffJensen"]:
        for field in ("given_name", "family_name"):
            r = await send(world.client, (method, path, _with(body, ("passengers", 0, field), name)))
            assert_problem(r, 422, "validation_error")
    contact = _with(body, ("contact", "email"), "anna\u202e@example.com")
    assert_client_error(await send(world.client, (method, path, contact)))
    assert await world.footprint() == before
    # Ordinary names with accents, apostrophes, hyphens and spaces still go through.
    ok = await send(world.client, (method, path, _with(body, ("passengers", 0), adult("Zoë", "O'Brien-Müller Ås"))))
    assert ok.status_code == 201, ok.text

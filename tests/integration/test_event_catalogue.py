"""Every event the platform emits matches its versioned schema, and the AsyncAPI document lists it.

A full life of orders and flights runs through the API; then every outbox row is validated
against the catalogue. A field added to an event without its model, or a new event type without
one, fails here: the published schemas cannot drift from what consumers receive.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from skybook.asyncapi import CATALOGUE, build_asyncapi, topic_of, validate_event
from skybook.booking.handlers import expire_overdue
from skybook.bootstrap import Container
from skybook.cli import app as cli
from skybook.platform.outbox import event_from_row, outbox
from tests.conftest import CARD_DECLINED, CARD_ERROR, CARD_OK, Network, adult


async def _order(network: Network, flight_id: str, family: str, *, pay: bool) -> dict[str, Any]:
    hold = (await network.hold(flight_id)).json()
    r = await network.client.post(
        "/v1/orders",
        json={"hold_id": hold["id"], "passengers": [adult(family=family)], "contact": {"email": "a@example.com"}},
    )
    assert r.status_code == 201, r.text
    if pay:
        r = await network.client.post(f"/v1/orders/{hold['id']}/payments", json={"card": CARD_OK})
        assert r.status_code == 200, r.text
    order: dict[str, Any] = r.json()
    return order


async def _everything_happens(network: Network, container: Container) -> None:
    """Each kind of change the platform knows, once."""
    client, staff = network.client, network.staff
    start = network.clock.now().date() + timedelta(days=1)
    line = {
        "flight_number": "101",
        "origin": "CPH",
        "destination": "LHR",
        "departure_time": "07:05",
        "arrival_time": "07:55",
        "days_of_week": [1, 2, 3, 4, 5, 6, 7],
        "aircraft": "T60",
        "fares": [{"booking_class": "Y", "cabin": "Y", "amount": 20000, "currency": "EUR", "seat_limit": 60}],
    }
    body = {"carrier": "XB", "period_start": start.isoformat(), "period_end": start.isoformat(), "flights": [line]}
    assert (await staff.post("/v1/schedules/import", json=body)).status_code == 200
    flight = await network.flight()
    fid = flight["id"]
    assert (await staff.patch(f"/v1/flights/{fid}/booking-classes/M", json={"amount": 16000})).status_code == 200

    ticketed = await _order(network, fid, "Jensen", pay=True)
    passenger = ticketed["passengers"][0]["id"]
    seat = await client.post(
        f"/v1/orders/{ticketed['id']}/seats",
        json={"seats": [{"passenger_id": passenger, "flight_id": fid, "seat": "3A"}]},
    )
    assert seat.status_code == 200, seat.text
    assert (await client.post(f"/v1/orders/{ticketed['id']}/cancel")).status_code == 200  # void + order.cancelled

    confirmed = await _order(network, fid, "Madsen", pay=False)
    declined = await client.post(f"/v1/orders/{confirmed['id']}/payments", json={"card": CARD_DECLINED})
    assert declined.status_code == 402
    failed = await client.post(f"/v1/orders/{confirmed['id']}/payments", json={"card": CARD_ERROR})
    assert failed.status_code == 502
    assert (await client.post(f"/v1/orders/{confirmed['id']}/cancel")).status_code == 200  # unpaid cancel

    released = (await network.hold(fid)).json()
    assert (await client.post(f"/v1/holds/{released['id']}/release")).status_code == 200
    cancelled_hold = (await network.hold(fid)).json()
    assert (await client.post(f"/v1/orders/{cancelled_hold['id']}/cancel")).status_code == 200

    await network.hold(fid)  # will expire as a hold
    await _order(network, fid, "Larsen", pay=False)  # will expire as an unpaid order
    network.clock.advance(timedelta(hours=1))
    assert await expire_overdue(container) == 2

    assert (await staff.post(f"/v1/flights/{fid}/cancel")).status_code == 200
    await container.dispatcher.drain()


@pytest.fixture
async def emitted(network: Network, container: Container) -> list[Any]:
    await _everything_happens(network, container)
    async with container.engine.connect() as conn:
        return list(await conn.execute(sa.select(outbox).order_by(outbox.c.position)))


async def test_every_emitted_event_validates_against_its_versioned_model(emitted: list[Any]) -> None:
    problems = []
    for row in emitted:
        try:
            validate_event(event_from_row(row))
        except Exception as exc:  # report them all at once
            problems.append(f"{row.type} v{row.version}: {exc}")
    assert not problems, "\n".join(problems)
    # The flow above really covers the catalogue, so this test guards every model.
    assert {(r.type, r.version) for r in emitted} == set(CATALOGUE), "a catalogued event is not exercised"


async def test_the_asyncapi_document_describes_every_emitted_event(
    emitted: list[Any], clients: Any, container: Container
) -> None:
    anonymous: httpx.AsyncClient = clients(None)
    r = await anonymous.get("/asyncapi.json")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc == json.loads(json.dumps(build_asyncapi(container.consumers())))
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["title"] and doc["info"]["version"]

    # Every $ref points at something that exists.
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [node["$ref"]] if isinstance(node.get("$ref"), str) else [x for v in node.values() for x in refs(v)]
        if isinstance(node, list):
            return [x for v in node for x in refs(v)]
        return []

    def resolve(ref: str) -> Any:
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            assert part in node, f"dangling $ref {ref}"
            node = node[part]
        return node

    for ref in refs(doc):
        resolve(ref)

    messages = doc["components"]["messages"]
    by_type = {m["name"]: m for m in messages.values() if not m["name"].endswith(".batch")}
    for event_type in {row.type for row in emitted}:
        message = by_type[event_type]
        envelope, specific = message["payload"]["allOf"]
        assert resolve(envelope["$ref"])["required"]  # the envelope fields
        assert set(resolve(envelope["$ref"])["properties"]) == {
            "id",
            "type",
            "version",
            "occurred_at",
            "tenant_id",
            "aggregate_id",
            "correlation_id",
            "causation_id",
            "data",
        }
        assert specific["properties"]["type"]["const"] == event_type
        assert resolve(specific["properties"]["data"]["$ref"])["properties"]
        # On its context's Kafka topic and as a routing key of the tasks exchange.
        topic = next(c for c in doc["channels"].values() if c["address"] == topic_of(event_type))
        assert any(resolve(m["$ref"]) is message for m in topic["messages"].values())
        task = next(
            c
            for c in doc["channels"].values()
            if c["address"] == event_type and c["bindings"]["amqp"]["exchange"]["name"] == "skybook.tasks"
        )
        assert task["bindings"]["amqp"]["is"] == "routingKey"
        # There a message holds one event, or an array of two or more of the same envelope.
        carried = [resolve(m["$ref"]) for m in task["messages"].values()]
        assert carried[0] is message
        assert carried[1]["name"] == f"{event_type}.batch"
        assert carried[1]["payload"] == {"type": "array", "minItems": 2, "items": message["payload"]}
    for op in doc["operations"].values():
        assert op["action"] in {"send", "receive"}
        channel = resolve(op["channel"]["$ref"])
        for m in op["messages"]:  # an operation's messages are messages of its channel
            assert m["$ref"].startswith(op["channel"]["$ref"] + "/messages/"), m
            assert resolve(m["$ref"]) in channel["messages"].values()
    # The workers' subscriptions are part of it: ticketing listens to payment.captured on a task queue.
    ticketing = [op for op in doc["operations"].values() if op["title"] == "booking.ticketing handles payment.captured"]
    assert len(ticketing) == 1 and ticketing[0]["bindings"]["amqp"]["queue"]["durable"] is True


def test_skybook_asyncapi_writes_the_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBOOK_DATA_DIR", str(tmp_path / "data"))
    target = tmp_path / "asyncapi.json"
    result = CliRunner().invoke(cli, ["asyncapi", "--output", str(target)])
    assert result.exit_code == 0, result.output
    doc = json.loads(target.read_text())
    assert doc["asyncapi"] == "3.0.0"
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names == {t for t, _ in CATALOGUE} | {f"{t}.batch" for t, _ in CATALOGUE}

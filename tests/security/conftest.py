"""Fixtures of the security suites: a scene of tenant A's objects in every state, and state snapshots."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from skybook.bootstrap import Container
from skybook.inventory.tables import booking_classes, flight_cabins
from skybook.schema import metadata
from tests.conftest import CARD_OK, Identities, Network, Party, adult
from tests.security.openapi import document_app

Clients = Callable[[Party | None], httpx.AsyncClient]


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    """The OpenAPI document; building the app does no I/O, so it needs no database."""
    document: dict[str, Any] = document_app().openapi()
    return document


@dataclass
class Scene:
    """Objects owned by tenant A's agent and by a traveller of the direct tenant, in each state."""

    flight: dict[str, Any]
    held: dict[str, Any]
    confirmed: dict[str, Any]
    ticketed: dict[str, Any]
    traveller_held: dict[str, Any]
    traveller_ticketed: dict[str, Any]
    invitation_token: str
    webhook_endpoint: dict[str, Any]
    webhook_delivery: dict[str, Any]

    def a_orders(self) -> dict[str, dict[str, Any]]:
        return {"held": self.held, "confirmed": self.confirmed, "ticketed": self.ticketed}

    def traveller_orders(self) -> dict[str, dict[str, Any]]:
        return {"traveller's held": self.traveller_held, "traveller's ticketed": self.traveller_ticketed}


async def book(client: httpx.AsyncClient, flight_id: str, stage: str, family: str = "Jensen") -> dict[str, Any]:
    """An order of ``client``'s principal taken to ``stage``: held, confirmed or ticketed."""
    hold = await client.post(
        "/v1/holds",
        json={"segments": [{"flight_id": flight_id, "booking_class": "M"}], "passengers": {"adults": 1}},
    )
    assert hold.status_code == 201, hold.text
    order: dict[str, Any] = hold.json()
    if stage == "held":
        return order
    confirmed = await client.post(
        "/v1/orders",
        json={
            "hold_id": order["id"],
            "passengers": [adult(family=family)],
            "contact": {"email": "anna@example.com", "phone": "+4512345678"},
        },
    )
    assert confirmed.status_code == 201, confirmed.text
    order = confirmed.json()
    if stage == "confirmed":
        return order
    paid = await client.post(f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK})
    assert paid.status_code == 200, paid.text
    ticketed: dict[str, Any] = paid.json()
    assert ticketed["status"] == "ticketed"
    return ticketed


@pytest.fixture
async def scene(network: Network, clients: Clients, identities: Identities, container: Container) -> Scene:
    flight = await network.flight()
    a = network.client  # tenant A's agent
    traveller = clients(identities.traveller)
    a_admin = clients(identities.a_admin)
    invite = await a_admin.post("/v1/users", json={"email": "invited.agent@agency-a.example.com", "role": "agent"})
    assert invite.status_code == 201, invite.text
    # Tenant A's webhook endpoint (nothing listens there: the sender never runs in these suites).
    endpoint = await a_admin.post(
        "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/hooks", "event_types": ["hold.created"]}
    )
    assert endpoint.status_code == 201, endpoint.text
    scene = Scene(
        flight=flight,
        held=await book(a, flight["id"], "held"),
        confirmed=await book(a, flight["id"], "confirmed", family="Madsen"),
        ticketed=await book(a, flight["id"], "ticketed", family="Larsen"),
        traveller_held=await book(traveller, flight["id"], "held"),
        traveller_ticketed=await book(traveller, flight["id"], "ticketed", family="Lovelace"),
        invitation_token=invite.json()["invitation_token"],
        webhook_endpoint=endpoint.json(),
        webhook_delivery={},
    )
    while await container.dispatcher.drain():  # the events become tenant A's webhook deliveries
        pass
    log = await a_admin.get(f"/v1/webhook-endpoints/{scene.webhook_endpoint['id']}/deliveries")
    scene.webhook_delivery = log.json()["items"][0]
    return scene


# Columns that only record that a credential was used; a refused request may touch them.
_USAGE_COLUMNS = frozenset({"last_used_at"})


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    """Everything a request could have changed: every row of every table (usage stamps aside)."""
    state: dict[str, Any] = {}
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if c.name not in _USAGE_COLUMNS]
            rows = (await conn.execute(sa.select(*columns))).all()
            state[table.name] = sorted(repr(tuple(r)) for r in rows)
        seats = (
            await conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(flight_cabins.c.held), 0),
                    sa.func.coalesce(sa.func.sum(flight_cabins.c.sold), 0),
                )
            )
        ).one()
        classes = (
            await conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(booking_classes.c.held), 0),
                    sa.func.coalesce(sa.func.sum(booking_classes.c.sold), 0),
                )
            )
        ).one()
    state["seat counts (cabins held, sold; classes held, sold)"] = (*seats, *classes)
    return state


def state_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Names of what differs between two snapshots, with row counts."""
    changed = []
    for name in before:
        if before[name] != after.get(name):
            b, a = before[name], after.get(name)
            if isinstance(b, list) and isinstance(a, list):
                changed.append(f"{name}: {len(b)} -> {len(a)} rows, {len(set(a) - set(b))} new or changed")
            else:
                changed.append(f"{name}: {b} -> {a}")
    return changed


@pytest.fixture
def engine(container: Container) -> AsyncEngine:
    return container.engine

"""The consistency audit passes on a clean booking history and names the check a corruption breaks."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from skybook.booking.tables import orders, passengers, tickets
from skybook.bootstrap import Container
from skybook.inventory.tables import flight_cabins
from skybook.ops.audit import Subscription, report, run_audit
from skybook.payments.tables import payments
from skybook.platform.outbox import inbox, outbox
from tests.conftest import CARD_OK, Database, Network, adult


async def _order(network: Network, flight_id: str, *, pay: bool = True, adults: int = 1) -> str:
    hold = await network.hold(flight_id, "M", adults=adults)
    assert hold.status_code == 201, hold.text
    order_id: str = hold.json()["id"]
    people = [adult(given=name) for name in ["Anna", "Bo", "Cy"][:adults]]
    r = await network.client.post(
        "/v1/orders", json={"hold_id": order_id, "passengers": people, "contact": {"email": "anna@example.com"}}
    )
    assert r.status_code == 201, r.text
    if pay:
        paid = await network.client.post(f"/v1/orders/{order_id}/payments", json={"card": CARD_OK})
        assert paid.status_code == 200, paid.text
    return order_id


async def _history(network: Network, container: Container) -> dict[str, str]:
    """Ticketed, cancelled-after-ticketing, confirmed-unpaid and released orders, events drained."""
    flight = await network.flight()
    ids = {
        "ticketed": await _order(network, flight["id"], adults=2),
        "cancelled": await _order(network, flight["id"]),
        "unpaid": await _order(network, flight["id"], pay=False),
    }
    assert (await network.client.post(f"/v1/orders/{ids['cancelled']}/cancel")).status_code == 200
    released = await network.hold(flight["id"], "M")
    assert (await network.client.post(f"/v1/holds/{released.json()['id']}/release")).status_code == 200
    while await container.dispatcher.drain():
        pass
    return ids


def _subs(container: Container) -> list[Subscription]:
    return [Subscription(c.name, c.event_types) for c in container.consumers()]


async def _failing(container: Container) -> dict[str, list[dict[str, Any]]]:
    doc = report(await run_audit(container.engine, _subs(container)))
    return {c["name"]: c["failures"] for c in doc["checks"] if not c["passed"]}


async def test_a_clean_booking_history_passes_every_check(network: Network, container: Container) -> None:
    await _history(network, container)
    doc = report(await run_audit(container.engine, _subs(container)))
    assert [c["name"] for c in doc["checks"]] == [
        "seats_conserved",
        "tickets_match_orders",
        "outbox_delivered",
        "consumer_effects_once",
        "payments_balance",
    ]
    assert all(c["checked"] > 0 for c in doc["checks"]), doc
    assert doc["consistency"] == 1.0, doc


async def test_each_corruption_fails_its_own_check(network: Network, container: Container) -> None:
    ids = await _history(network, container)
    unpaid = uuid.UUID(ids["unpaid"])
    ticketed = uuid.UUID(ids["ticketed"])
    async with container.engine.begin() as conn:
        cabin_id = await conn.scalar(sa.select(flight_cabins.c.id).limit(1))
        await conn.execute(
            sa.update(flight_cabins).where(flight_cabins.c.id == cabin_id).values(sold=flight_cabins.c.sold + 1)
        )
    failing = await _failing(container)
    assert list(failing) == ["seats_conserved"]
    assert [row["id"] for row in failing["seats_conserved"]] == [str(cabin_id)]

    async with container.engine.begin() as conn:
        await conn.execute(
            sa.update(flight_cabins).where(flight_cabins.c.id == cabin_id).values(sold=flight_cabins.c.sold - 1)
        )
        # An extra ticket, on a passenger of an order nobody paid for.
        passenger_id = await conn.scalar(sa.select(passengers.c.id).where(passengers.c.order_id == unpaid))
        await conn.execute(
            sa.insert(tickets).values(
                number="9870000999999",
                order_id=unpaid,
                passenger_id=passenger_id,
                status="issued",
                issued_at=container.clock.now(),
                amount=15000,
                currency="EUR",
            )
        )
    failing = await _failing(container)
    assert set(failing) == {"tickets_match_orders", "payments_balance"}
    assert failing["tickets_match_orders"][0]["passenger_id"] == str(passenger_id)
    assert failing["payments_balance"] == [
        {"order_id": str(unpaid), "captured": 0, "refunded": 0, "issued_tickets": 15000}
    ]

    async with container.engine.begin() as conn:
        await conn.execute(sa.delete(tickets).where(tickets.c.number == "9870000999999"))
        # A lost consumer effect and an event never delivered.
        ticketed_event = await conn.scalar(
            sa.select(outbox.c.event_id).where(
                outbox.c.type == "order.ticketed", outbox.c.aggregate_id == str(ticketed)
            )
        )
        await conn.execute(
            sa.delete(inbox).where(
                inbox.c.event_id == ticketed_event, inbox.c.consumer == "notifications.confirmation_email"
            )
        )
        await conn.execute(
            sa.update(outbox).where(outbox.c.type == "hold.created").values(dispatched_at=None, attempts=5)
        )
        # Money taken twice for one order.
        await conn.execute(
            sa.update(payments).where(payments.c.order_id == ticketed).values(amount=payments.c.amount * 2)
        )
    failing = await _failing(container)
    assert set(failing) == {"outbox_delivered", "consumer_effects_once", "payments_balance"}
    assert failing["consumer_effects_once"] == [
        {
            "consumer": "notifications.confirmation_email",
            "event_id": str(ticketed_event),
            "event_type": "order.ticketed",
            "handled": 0,
        }
    ]
    assert {row["type"] for row in failing["outbox_delivered"]} == {"hold.created"}
    assert [row["order_id"] for row in failing["payments_balance"]] == [str(ticketed)]
    async with container.engine.connect() as conn:
        assert await conn.scalar(sa.select(orders.c.status).where(orders.c.id == ticketed)) == "ticketed"


async def test_an_inbox_longer_than_a_statement_may_carry_parameters_is_audited(container: Container) -> None:
    # 33,000 delivered events, each handled once: before, the check asked for the ids it had seen
    # in one IN (...) and failed with "the number of query arguments cannot exceed 32767".
    now, n = container.clock.now(), 33_000
    ids = [uuid.uuid4() for _ in range(n)]
    event = {"type": "audit.bulk", "version": 1, "context": "audit", "aggregate_id": "a", "data": {}}
    async with container.engine.begin() as conn:
        await conn.execute(
            sa.insert(outbox), [{**event, "event_id": e, "occurred_at": now, "dispatched_at": now} for e in ids]
        )
        await conn.execute(sa.insert(inbox), [{"consumer": "bulk", "event_id": e, "handled_at": now} for e in ids])
        # One stray: an inbox entry whose event is not in the outbox.
        stray = uuid.uuid4()
        await conn.execute(sa.insert(inbox).values(consumer="bulk", event_id=stray, handled_at=now))

    failing = await _failing(container)
    assert failing == {
        "consumer_effects_once": [{"consumer": "bulk", "event_id": str(stray), "event_type": None, "handled": 1}]
    }


# The command's own logic is the checks above (run on both backends); once is enough for the CLI.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_the_audit_command_prints_the_checks_and_exits_non_zero_on_a_failure(
    network: Network, container: Container, database: Database, tmp_path: Path
) -> None:
    await _history(network, container)
    env = {
        **os.environ,
        "SKYBOOK_DATABASE_URL": database.url,
        "SKYBOOK_DATA_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }

    def audit() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "skybook.cli", "audit"], env=env, capture_output=True, text=True, timeout=120
        )

    clean = await asyncio.to_thread(audit)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["consistency"] == 1.0

    async with container.engine.begin() as conn:
        await conn.execute(sa.update(outbox).values(dispatched_at=None, attempts=5))
    broken = await asyncio.to_thread(audit)
    assert broken.returncode == 1, broken.stderr
    document = json.loads(broken.stdout)
    assert [c["name"] for c in document["checks"] if not c["passed"]] == ["outbox_delivered"]
    assert document["passed"] == 4

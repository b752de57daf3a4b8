"""E-tickets are issued by the ticketing consumer of ``payment.captured``, not inside the payment request.

The payment request records the capture and its event in one transaction; the consumer (run by
the dispatcher in the embedded default, by ``skybook worker`` when scaled out) issues the
tickets exactly once. These tests stop the consumers to look at the state in between.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from skybook.booking.handlers import TicketIssuer, expire_overdue
from skybook.booking.tables import tickets
from skybook.bootstrap import Container
from skybook.payments import SandboxPaymentProvider
from skybook.platform.outbox import event_from_row, inbox, outbox
from tests.conftest import CARD_OK, Network, adult


def _no_workers(container: Container, wait: float = 0.0) -> None:
    """As if every worker were down: nothing delivers events, the payment waits ``wait`` seconds."""
    container.settings.run_workers = False
    container.settings.ticketing_wait_seconds = wait


def _workers_back(container: Container) -> None:
    container.settings.run_workers = True


async def _confirmed(network: Network, adults: int = 1) -> dict[str, Any]:
    flight = await network.flight()
    hold = (await network.hold(flight["id"], adults=adults)).json()
    people = [adult(given=g) for g in ("Anna", "Bo", "Carl")[:adults]]
    r = await network.client.post(
        "/v1/orders",
        json={"hold_id": hold["id"], "passengers": people, "contact": {"email": "anna@example.com"}},
    )
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    order["flight_id"] = flight["id"]
    return order


async def _counts(client: httpx.AsyncClient, flight_id: str) -> tuple[int, int]:
    cabin = next(c for c in (await client.get(f"/v1/flights/{flight_id}")).json()["cabins"] if c["cabin"] == "Y")
    return cabin["held"], cabin["sold"]


async def _ticket_count(container: Container, order_id: str) -> int:
    async with container.engine.connect() as conn:
        n = await conn.scalar(
            sa.select(sa.func.count()).select_from(tickets).where(tickets.c.order_id == uuid.UUID(order_id))
        )
    return int(n or 0)


async def test_with_no_worker_running_the_payment_answers_202_and_the_worker_tickets_later(
    network: Network, container: Container
) -> None:
    order = await _confirmed(network, adults=2)
    _no_workers(container, wait=0.2)

    paid = await network.client.post(f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK})

    assert paid.status_code == 202, paid.text
    assert paid.headers["location"] == f"/v1/orders/{order['id']}"
    body = paid.json()
    assert (body["status"], body["payment_status"], body["tickets"]) == ("confirmed", "captured", [])
    # Paid: a second payment is refused without charging, and the sweeper leaves it alone past its deadline.
    again = await network.client.post(f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK})
    assert (again.status_code, again.json()["code"]) == (409, "already_paid")
    network.clock.advance(timedelta(hours=2))
    assert await expire_overdue(container) == 0
    assert await _counts(network.client, order["flight_id"]) == (2, 0)

    while await container.dispatcher.drain():  # the worker catches up (tickets, then the e-mail)
        pass

    ticketed = (await network.client.get(paid.headers["location"])).json()
    assert ticketed["status"] == "ticketed"
    assert len(ticketed["tickets"]) == 2
    assert await _counts(network.client, order["flight_id"]) == (0, 2)
    assert list(container.settings.mail_dir.glob(f"{order['record_locator']}-*.eml"))


async def test_the_payment_answers_200_with_the_tickets_when_the_worker_is_prompt(
    network: Network, container: Container
) -> None:
    order = await _confirmed(network)
    paid = await network.client.post(f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK})
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["payment_status"]) == ("ticketed", "captured")
    assert "location" not in paid.headers


async def test_a_payment_waiting_for_a_slow_worker_answers_200_as_soon_as_the_tickets_exist(
    network: Network, container: Container
) -> None:
    order = await _confirmed(network, adults=2)
    # Nothing in the request delivers events; a "worker" elsewhere tickets a moment later. The
    # payment's wait is generous: it must end when the tickets exist, not when the wait runs out.
    _no_workers(container, wait=30)

    async def worker_catches_up() -> None:
        await asyncio.sleep(0.3)
        while await container.dispatcher.drain():
            pass

    worker = asyncio.create_task(worker_catches_up())
    paid = await network.client.post(f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK})
    await worker

    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "ticketed"
    assert len(paid.json()["tickets"]) == 2
    # On PostgreSQL the wait was woken by the ticketing transaction's NOTIFY, not by polling.
    assert container.order_signals.live == (container.engine.dialect.name == "postgresql")


async def test_a_redelivered_payment_captured_issues_no_second_ticket(network: Network, container: Container) -> None:
    order = await _confirmed(network, adults=2)
    paid = await network.client.post(f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK})
    assert paid.status_code == 200, paid.text
    first = sorted(t["number"] for t in paid.json()["tickets"])

    async with container.engine.begin() as conn:
        row = (await conn.execute(sa.select(outbox).where(outbox.c.type == "payment.captured"))).one()
        # The broker delivers it again (e.g. the worker died before acknowledging).
        await conn.execute(sa.update(outbox).where(outbox.c.position == row.position).values(dispatched_at=None))
    await container.dispatcher.drain()
    # Even past the inbox (another consumer name, a wiped inbox), the order status guard holds.
    async with container.engine.begin() as conn:
        await conn.execute(sa.delete(inbox))
    async with container.uow() as uow:
        await TicketIssuer(container)(event_from_row(row), uow)
        await uow.commit()

    assert await _ticket_count(container, order["id"]) == 2
    after = (await network.client.get(f"/v1/orders/{order['id']}")).json()
    assert sorted(t["number"] for t in after["tickets"]) == first
    assert await _counts(network.client, order["flight_id"]) == (0, 2)
    async with container.engine.connect() as conn:
        ticketed_events = await conn.scalar(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.type == "order.ticketed")
        )
    assert ticketed_events == 1


async def test_the_ticketed_event_carries_the_request_correlation_and_its_cause(
    network: Network, container: Container
) -> None:
    order = await _confirmed(network)
    await network.client.post(
        f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK}, headers={"X-Request-ID": "pay-7"}
    )
    async with container.engine.connect() as conn:
        rows = {r.type: r for r in await conn.execute(sa.select(outbox).where(outbox.c.aggregate_id == order["id"]))}
    assert rows["payment.captured"].correlation_id == "pay-7"
    assert rows["order.ticketed"].correlation_id == "pay-7"
    assert rows["order.ticketed"].causation_id == str(rows["payment.captured"].event_id)


async def test_cancelling_a_paid_order_before_its_tickets_voids_the_payment_and_no_ticket_follows(
    network: Network, container: Container, payments: SandboxPaymentProvider
) -> None:
    order = await _confirmed(network)
    _no_workers(container)
    assert (await network.client.post(f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK})).status_code == 202

    cancelled = await network.client.post(f"/v1/orders/{order['id']}/cancel")

    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["payment_status"]) == ("cancelled", "voided")
    assert [c for c, _ in payments.calls].count("void") == 1
    assert await _counts(network.client, order["flight_id"]) == (0, 0)
    _workers_back(container)
    await container.dispatcher.drain()  # the late payment.captured finds a cancelled order
    assert await _ticket_count(container, order["id"]) == 0
    assert (await network.client.get(f"/v1/orders/{order['id']}")).json()["status"] == "cancelled"
    async with container.engine.connect() as conn:
        types = list(
            await conn.scalars(
                sa.select(outbox.c.type).where(outbox.c.aggregate_id == order["id"]).order_by(outbox.c.position)
            )
        )
    assert types[-2:] == ["payment.refunded", "order.cancelled"]


async def test_two_sweepers_at_once_expire_each_overdue_order_exactly_once(
    network: Network, container: Container
) -> None:
    flight = await network.flight()
    for _ in range(6):
        assert (await network.hold(flight["id"])).status_code == 201
    network.clock.advance(timedelta(hours=1))

    done = await asyncio.gather(expire_overdue(container), expire_overdue(container), expire_overdue(container))

    assert sum(done) == 6
    async with container.engine.connect() as conn:
        expired = await conn.scalar(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.type == "hold.expired")
        )
    assert expired == 6
    assert await _counts(network.client, flight["id"]) == (0, 0)

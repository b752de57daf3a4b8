"""The platform scaled out, as an operator runs it: ``skybook api``, ``skybook relay`` and ``skybook
worker`` as separate processes on PostgreSQL, Redis, RabbitMQ and Kafka (librdkafka's mock cluster).

A traveller's booking goes in through the API process; everything after the payment happens in
the worker: the tickets, the confirmation e-mail, the tenant's signed webhook and the search
cache's invalidation in Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from skybook.notifications.webhooks.signing import verify_signature
from skybook.seed.demo import DEMO_PASSWORD
from tests.backbone.conftest import Processes
from tests.conftest import CARD_OK, adult, serving
from tests.integration.conftest import REDIS_URL, RUN_PREFIX, _drop_keys, _redis_store
from tests.loopback import Receiver

pytestmark = pytest.mark.postgres

T = TypeVar("T")


@pytest.fixture
async def cache_prefix() -> AsyncIterator[str]:
    """A Redis key prefix of this test alone (Redis must be reachable); its keys are deleted afterwards."""
    prefix = f"{RUN_PREFIX}-p{uuid.uuid4().hex[:6]}"
    await (await _redis_store(prefix)).close()  # skips here, or fails in CI, when Redis is down
    yield prefix
    await _drop_keys(prefix)


async def _eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, processes: Processes, seconds: float = 30
) -> T:
    """Poll ``probe`` until it returns something (bounded: fails after ``seconds``, with the logs)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (found := await probe()) is not None:
            return found
        await asyncio.sleep(0.1)
    pytest.fail(f"{what}: not within {seconds} s\n{processes.output()}")


async def _login(api: httpx.AsyncClient, email: str) -> dict[str, str]:
    r = await api.post("/v1/auth/token", data={"grant_type": "password", "username": email, "password": DEMO_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_a_booking_through_the_api_process_is_ticketed_mailed_announced_and_uncached_by_the_worker(
    engine: AsyncEngine, processes: Processes, receiver: Receiver, cache_prefix: str, tmp_path: Path
) -> None:
    seeded = processes.run("seed demo")
    assert seeded.returncode == 0, seeded.stderr
    shared = {
        "redis_url": REDIS_URL,
        "cache_key_prefix": cache_prefix,
        "allow_loopback_webhooks": "true",
        "webhook_sender_interval_seconds": "0.2",
    }
    processes.start("relay")
    # No worker yet: whatever follows the payment can only come from the worker started below.
    with serving(processes.env(ticketing_wait_seconds="0.5", **shared), 1, "api", processes.logs) as (port,):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            endpoint = await api.post(
                "/v1/webhook-endpoints",
                headers=await _login(api, "agency-admin@skybook.example.com"),
                json={"url": receiver.url, "event_types": ["order.ticketed"], "description": "agency back office"},
            )
            assert endpoint.status_code == 201, endpoint.text
            api.headers.update(await _login(api, "agent@skybook.example.com"))

            day = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
            query = {"origin": "CPH", "destination": "LHR", "departure_date": day, "adults": 1}

            async def offer_of(flight_id: str, booking_class: str) -> dict[str, Any]:
                r = await api.get("/v1/offers", params=query)
                assert r.status_code == 200, r.text
                seg: dict[str, Any] = next(
                    s
                    for o in r.json()["items"]
                    for s in o["segments"]
                    if (s["flight_id"], s["booking_class"]) == (flight_id, booking_class)
                )
                return seg

            first = (await api.get("/v1/offers", params=query)).json()["items"][0]["segments"][0]
            flight_id, booking_class, seats = first["flight_id"], first["booking_class"], first["seats_left"]
            assert (await offer_of(flight_id, booking_class))["seats_left"] == seats  # now cached in Redis

            hold = await api.post(
                "/v1/holds",
                json={
                    "segments": [{"flight_id": flight_id, "booking_class": booking_class}],
                    "passengers": {"adults": 1},
                },
            )
            assert hold.status_code == 201, hold.text
            order = await api.post(
                "/v1/orders",
                json={"hold_id": hold.json()["id"], "passengers": [adult()], "contact": {"email": "anna@example.com"}},
            )
            assert order.status_code == 201, order.text
            order_id, locator = order.json()["id"], order.json()["record_locator"]
            paid = await api.post(f"/v1/orders/{order_id}/payments", json={"card": CARD_OK})
            assert paid.status_code == 202, paid.text  # captured; the tickets follow from the worker
            assert (paid.json()["status"], paid.json()["tickets"]) == ("confirmed", [])

            processes.start("worker", **shared)

            async def ticketed() -> dict[str, Any] | None:
                r = (await api.get(f"/v1/orders/{order_id}")).json()
                return r if r["status"] == "ticketed" else None

            tickets = [t["number"] for t in (await _eventually(ticketed, "tickets issued", processes))["tickets"]]
            assert len(tickets) == 1

            async def mail() -> list[Path] | None:
                return sorted((tmp_path / "mail").glob(f"{locator}-*.eml")) or None

            (eml,) = await _eventually(mail, "confirmation e-mail written", processes)
            assert tickets[0] in eml.read_text() and "anna@example.com" in eml.read_text()

            async def announced() -> list[Any] | None:
                return receiver.received or None

            (delivery,) = await _eventually(announced, "webhook received", processes)
            assert verify_signature(
                delivery.body, delivery.headers["skybook-signature"], endpoint.json()["secret"], now=time.time()
            )
            assert delivery.event["type"] == "order.ticketed"
            assert delivery.event["data"]["record_locator"] == locator
            assert [p["ticket_number"] for p in delivery.event["data"]["passengers"]] == tickets

            # The worker handled inventory.changed and dropped the cached leg from Redis: the API
            # process now answers with the seat sold (the cache's TTL is an hour).
            async def uncached() -> dict[str, Any] | None:
                seg = await offer_of(flight_id, booking_class)
                return seg if seg["seats_left"] < seats else None

            assert (await _eventually(uncached, "search shows the sold seat", processes))["seats_left"] == seats - 1
    await asyncio.sleep(1)  # a second delivery or e-mail, if any, would show up now
    assert len(receiver.received) == 1
    assert len(sorted((tmp_path / "mail").glob(f"{locator}-*.eml"))) == 1

"""Metrics by route template and logs that follow a booking from HTTP through the outbox to a consumer."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from skybook.bootstrap import Container
from skybook.platform.dispatcher import Consumer, InProcessDispatcher
from skybook.platform.events import Event
from skybook.platform.logs import configure_logging
from skybook.platform.outbox import outbox
from skybook.platform.uow import UnitOfWork
from tests.conftest import CARD_OK, Network, adult


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _book(network: Network, headers: dict[str, str] | None = None) -> str:
    flight = await network.flight()
    hold = await network.hold(flight["id"], "M")
    assert hold.status_code == 201, hold.text
    order_id: str = hold.json()["id"]
    r = await network.client.post(
        "/v1/orders",
        json={"hold_id": order_id, "passengers": [adult()], "contact": {"email": "anna@example.com"}},
    )
    assert r.status_code == 201, r.text
    paid = await network.client.post(f"/v1/orders/{order_id}/payments", json={"card": CARD_OK}, headers=headers)
    assert paid.status_code == 200, paid.text
    return order_id


async def test_metrics_count_requests_by_route_template_and_booking_steps(network: Network) -> None:
    route = "/v1/holds/{order_id}"
    before_get = _value("skybook_http_requests_total", method="GET", route=route, status_class="2xx")
    before_404 = _value("skybook_http_requests_total", method="GET", route="<unmatched>", status_class="4xx")
    before_holds = _value("skybook_holds_total", outcome="created")
    before_ticketed = _value("skybook_bookings_total", step="ticketed")

    order_id = await _book(network)
    assert (await network.client.get(f"/v1/holds/{order_id}")).status_code == 200
    assert (await network.client.get("/v1/no-such-thing")).status_code == 404

    assert _value("skybook_http_requests_total", method="GET", route=route, status_class="2xx") == before_get + 1
    assert _value("skybook_http_requests_total", method="GET", route="<unmatched>", status_class="4xx") == (
        before_404 + 1
    )
    assert _value("skybook_holds_total", outcome="created") == before_holds + 1
    assert _value("skybook_bookings_total", step="ticketed") == before_ticketed + 1

    # Scraped without a principal, in the Prometheus text format, with templates and never raw ids.
    anonymous = httpx.AsyncClient(transport=network.client._transport, base_url="http://testserver")
    scrape = await anonymous.get("/metrics")
    await anonymous.aclose()
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    assert 'skybook_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/holds/{order_id}"}' in text
    assert order_id not in text
    # Not part of the tenant API contract.
    assert "/metrics" not in (await network.client.get("/openapi.json")).json()["paths"]


async def test_an_idempotent_replay_is_timed_under_its_route_but_is_no_second_hold(network: Network) -> None:
    flight = await network.flight()
    before_post = _value("skybook_http_requests_total", method="POST", route="/v1/holds", status_class="2xx")
    before_holds = _value("skybook_holds_total", outcome="created")
    for _ in range(2):
        r = await network.hold(flight["id"], "M", headers={"Idempotency-Key": "replay-metrics-1"})
        assert r.status_code == 201, r.text
    assert _value("skybook_http_requests_total", method="POST", route="/v1/holds", status_class="2xx") == (
        before_post + 2
    )
    assert _value("skybook_holds_total", outcome="created") == before_holds + 1


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The process's logs as JSON lines in a buffer; the previous root handlers come back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    yield stream
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])


async def test_request_id_follows_a_booking_through_the_outbox_into_the_consumers_logs(
    network: Network, container: Container, json_logs: io.StringIO
) -> None:
    request_id = "trace-booking-0001"
    order_id = await _book(network, headers={"X-Request-ID": request_id})

    async with container.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(outbox.c.event_id, outbox.c.correlation_id).where(
                    outbox.c.type == "order.ticketed", outbox.c.aggregate_id == order_id
                )
            )
        ).one()
    assert row.correlation_id == request_id

    handled: list[str] = []

    async def consumer(event: Event, uow: UnitOfWork) -> None:
        logging.getLogger("skybook.test.consumer").info("ticket mail queued")
        handled.append(event.type)

    dispatcher = InProcessDispatcher(
        container.uow, container.clock, [Consumer("test.mailer", frozenset({"order.ticketed"}), consumer)]
    )
    while await dispatcher.drain():
        pass
    assert handled == ["order.ticketed"]

    records = [json.loads(line) for line in json_logs.getvalue().splitlines() if line.startswith("{")]
    mine = [r for r in records if r.get("logger") == "skybook.test.consumer"]
    assert len(mine) == 1
    assert mine[0]["correlation_id"] == request_id
    assert mine[0]["event_id"] == str(row.event_id)
    assert mine[0]["consumer"] == "test.mailer"
    assert mine[0]["event"] == "ticket mail queued"
    assert mine[0]["level"] == "info"

"""Tenant webhooks end to end, on SQLite and PostgreSQL: a real HTTP receiver on 127.0.0.1 gets
signed deliveries of the tenant's events; failures are retried and logged; deliveries replay;
secrets rotate; unsafe URLs, other tenants and unknown event types are refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY

from skybook.bootstrap import Container
from skybook.notifications.webhooks import run_webhook_sender, send_due
from skybook.notifications.webhooks.signing import SignatureError, verify_signature
from skybook.notifications.webhooks.tables import webhook_deliveries, webhook_endpoints
from skybook.platform.clock import FakeClock
from skybook.platform.outbox import outbox
from tests.conftest import CARD_OK, Identities, Network, Party, adult
from tests.loopback import Received, Receiver, on_loopback

Clients = Callable[[Party | None], httpx.AsyncClient]


@pytest.fixture
def admin(clients: Clients, identities: Identities) -> httpx.AsyncClient:
    """Agency A's tenant admin, who manages A's webhooks."""
    return clients(identities.a_admin)


async def _endpoint(
    admin: httpx.AsyncClient, url: str, types: tuple[str, ...] = ("hold.created", "order.confirmed")
) -> dict[str, Any]:
    r = await admin.post("/v1/webhook-endpoints", json={"url": url, "event_types": list(types), "description": "t"})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def _hold_and_confirm(network: Network) -> dict[str, Any]:
    flight = await network.flight()
    hold = await network.hold(flight["id"])
    assert hold.status_code == 201, hold.text
    order = await network.client.post(
        "/v1/orders",
        json={"hold_id": hold.json()["id"], "passengers": [adult()], "contact": {"email": "anna@example.com"}},
    )
    assert order.status_code == 201, order.text
    confirmed: dict[str, Any] = order.json()
    return confirmed


async def _deliver(container: Container) -> int:
    """Hand the outbox to the consumers (deliveries are created), then attempt what is due."""
    while await container.dispatcher.drain():
        pass
    return await send_due(container)


def _verify(container: Container, r: Received, secret: str) -> int:
    now = container.clock.now().timestamp()
    return verify_signature(r.body, r.headers["skybook-signature"], secret, now=now)


async def _log(admin: httpx.AsyncClient, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
    r = await admin.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _counter(result: str) -> float:
    return REGISTRY.get_sample_value("skybook_webhook_deliveries_total", {"result": result}) or 0.0


async def test_hold_and_confirm_reach_the_receiver_signed(
    network: Network, container: Container, admin: httpx.AsyncClient, receiver: Receiver, identities: Identities
) -> None:
    endpoint = await _endpoint(admin, receiver.url)
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    order = await _hold_and_confirm(network)
    assert await _deliver(container) == 2
    # Sent concurrently: in any order (receivers order by the envelope's occurred_at if they need to).
    receiver.received.sort(key=lambda r: r.event["occurred_at"])
    assert [r.event["type"] for r in receiver.received] == ["hold.created", "order.confirmed"]
    for r in receiver.received:
        assert r.path == "/hooks/skybook"
        assert _verify(container, r, secret) == int(r.headers["skybook-timestamp"])
        assert r.headers["skybook-event-id"] == r.event["id"]
        assert r.headers["skybook-event-type"] == r.event["type"]
        assert r.headers["content-type"] == "application/json"
        assert r.event["aggregate_id"] == order["id"]
        assert r.event["tenant_id"] == str(identities.a_admin.tenant_id)
    assert receiver.received[1].event["data"]["record_locator"] == order["record_locator"]
    # The log shows both as delivered on the first attempt; the secret is never shown again.
    log = await _log(admin, endpoint["id"])
    assert [(d["event_type"], d["status"], d["attempts"], d["response_status"]) for d in log] == [
        ("order.confirmed", "succeeded", 1, 200),
        ("hold.created", "succeeded", 1, 200),
    ]
    shown = await admin.get(f"/v1/webhook-endpoints/{endpoint['id']}")
    assert shown.status_code == 200 and "secret" not in shown.json() and secret not in shown.text
    async with container.engine.connect() as conn:
        stored = (await conn.execute(sa.select(webhook_endpoints.c.secret_ciphertext))).scalar_one()
    assert secret not in stored


async def test_events_of_another_tenant_or_an_unsubscribed_type_are_not_sent(
    network: Network, container: Container, clients: Clients, identities: Identities, receiver: Receiver
) -> None:
    await _endpoint(clients(identities.b_admin), receiver.url)  # agency B's endpoint
    a_endpoint = await _endpoint(clients(identities.a_admin), receiver.url, ("order.ticketed",))
    await _hold_and_confirm(network)  # agency A's hold and confirmation
    assert await _deliver(container) == 0
    assert receiver.received == []
    assert await _log(clients(identities.a_admin), a_endpoint["id"]) == []


async def test_a_redelivered_event_creates_no_second_delivery(
    network: Network, container: Container, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await _endpoint(admin, receiver.url)
    await _hold_and_confirm(network)
    await _deliver(container)
    async with container.engine.begin() as conn:  # as if the dispatcher crashed before marking them
        await conn.execute(outbox.update().values(dispatched_at=None))
    assert await _deliver(container) == 0
    assert len(receiver.received) == 2
    assert len(await _log(admin, endpoint["id"])) == 2


async def test_a_failed_attempt_is_retried_later_and_the_log_shows_both(
    network: Network, container: Container, clock: FakeClock, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await _endpoint(admin, receiver.url, ("hold.created",))
    receiver.statuses = [500]
    retrying = _counter("retrying")
    flight = await network.flight()
    assert (await network.hold(flight["id"])).status_code == 201
    assert await _deliver(container) == 1
    [pending] = await _log(admin, endpoint["id"])
    assert (pending["status"], pending["attempts"], pending["response_status"]) == ("pending", 1, 500)
    assert pending["last_error"] == "HTTP 500"
    assert pending["next_attempt_at"] is not None
    # Not before the backoff has passed (at most the base delay, 30 s, after the first failure)...
    assert await send_due(container) == 0
    clock.advance(timedelta(seconds=container.settings.webhook_retry_base_seconds + 1))
    # ...then once more, and the receiver's 200 ends it.
    assert await send_due(container) == 1
    [done] = await _log(admin, endpoint["id"])
    assert (done["status"], done["attempts"], done["response_status"], done["last_error"]) == (
        "succeeded",
        2,
        200,
        None,
    )
    assert [(a["number"], a["response_status"], a["error"]) for a in done["attempt_log"]] == [
        (1, 500, "HTTP 500"),
        (2, 200, None),
    ]
    assert len(receiver.received) == 2
    assert receiver.received[0].body == receiver.received[1].body
    assert receiver.received[0].headers["skybook-event-id"] == receiver.received[1].headers["skybook-event-id"]
    assert _counter("retrying") == retrying + 1


async def test_retries_end_as_failed_after_the_max_age_and_replay_failed_resends_them(
    network: Network, container: Container, clock: FakeClock, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    container.settings.webhook_max_age_seconds = 600
    started = clock.now()
    endpoint = await _endpoint(admin, receiver.url, ("hold.created",))
    receiver.statuses = [503] * 20
    failed = _counter("failed")
    flight = await network.flight()
    assert (await network.hold(flight["id"])).status_code == 201
    await _deliver(container)
    for _ in range(10):  # bounded: with 30 s doubling, 600 s allow at most 6 attempts
        clock.advance(timedelta(seconds=120))
        await send_due(container)
    [gave_up] = await _log(admin, endpoint["id"])
    assert gave_up["status"] == "failed" and gave_up["next_attempt_at"] is None
    assert 2 <= gave_up["attempts"] == len(gave_up["attempt_log"]) == len(receiver.received) <= 7
    assert _counter("failed") == failed + 1
    assert await _log(admin, endpoint["id"], status="failed") == [gave_up]
    # The receiver is fixed: replay everything that failed since the start.
    receiver.statuses = []
    r = await admin.post(f"/v1/webhook-endpoints/{endpoint['id']}/replay-failed", json={"since": started.isoformat()})
    assert r.status_code == 202, r.text
    [replay_id] = r.json()["delivery_ids"]
    assert await send_due(container) == 1
    log = {d["id"]: d for d in await _log(admin, endpoint["id"])}
    assert log[replay_id]["status"] == "succeeded" and log[replay_id]["replay_of"] == gave_up["id"]
    assert receiver.received[-1].headers["skybook-event-id"] == gave_up["event_id"]
    # Nothing failed after the replay's time: nothing more to replay.
    later = (clock.now() + timedelta(seconds=1)).isoformat()
    r = await admin.post(f"/v1/webhook-endpoints/{endpoint['id']}/replay-failed", json={"since": later})
    assert r.json()["delivery_ids"] == []


async def test_a_delivery_replays_with_the_same_event_and_a_fresh_signature(
    network: Network, container: Container, clock: FakeClock, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await _endpoint(admin, receiver.url, ("hold.created",))
    flight = await network.flight()
    assert (await network.hold(flight["id"])).status_code == 201
    await _deliver(container)
    [original] = await _log(admin, endpoint["id"])
    clock.advance(timedelta(minutes=10))
    r = await admin.post(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{original['id']}/replay")
    assert r.status_code == 202, r.text
    replay = r.json()
    assert (replay["status"], replay["replay_of"], replay["event_id"]) == (
        "pending",
        original["id"],
        original["event_id"],
    )
    assert await send_due(container) == 1
    first, second = receiver.received
    assert first.body == second.body and first.headers["skybook-event-id"] == second.headers["skybook-event-id"]
    assert int(second.headers["skybook-timestamp"]) == int(first.headers["skybook-timestamp"]) + 600
    assert _verify(container, second, endpoint["secret"])
    assert len(await _log(admin, endpoint["id"])) == 2


async def test_a_rotated_secret_signs_alongside_the_old_one_until_the_grace_period_ends(
    network: Network, container: Container, clock: FakeClock, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await _endpoint(admin, receiver.url, ("hold.created",))
    old = endpoint["secret"]
    r = await admin.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new.startswith("whsec_") and new != old
    grace = container.settings.webhook_secret_grace_seconds
    assert r.json()["previous_secret_expires_at"] is not None
    flight = await network.flight()
    assert (await network.hold(flight["id"])).status_code == 201
    await _deliver(container)
    during = receiver.received[-1]
    assert during.headers["skybook-signature"].count("v1=") == 2
    assert _verify(container, during, old) and _verify(container, during, new)
    # After the grace period only the new secret signs.
    clock.advance(timedelta(seconds=grace + 1))
    assert (await network.hold(flight["id"])).status_code == 201
    await _deliver(container)
    after = receiver.received[-1]
    assert after.headers["skybook-signature"].count("v1=") == 1
    assert _verify(container, after, new)
    with pytest.raises(SignatureError):
        _verify(container, after, old)


async def test_a_disabled_endpoint_is_sent_nothing(
    network: Network, container: Container, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await _endpoint(admin, receiver.url, ("hold.created",))
    flight = await network.flight()
    assert (await network.hold(flight["id"])).status_code == 201
    while await container.dispatcher.drain():  # the delivery exists, not yet sent
        pass
    r = await admin.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert (await network.hold(flight["id"])).status_code == 201  # an event while disabled: no delivery
    assert await _deliver(container) == 0
    assert receiver.received == []
    [waiting] = await _log(admin, endpoint["id"])
    assert (waiting["status"], waiting["attempts"]) == ("pending", 0)
    replay = await admin.post(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{waiting['id']}/replay")
    assert (replay.status_code, replay.json()["code"]) == (409, "webhook_endpoint_disabled")
    # Enabled again, the waiting delivery goes out.
    assert (await admin.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True})).status_code == 200
    assert await send_due(container) == 1
    assert len(receiver.received) == 1


async def test_several_senders_at_once_send_each_delivery_once(
    network: Network, container: Container, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    await _endpoint(admin, receiver.url, ("hold.created",))
    flight = await network.flight()
    for _ in range(6):
        assert (await network.hold(flight["id"])).status_code == 201
    while await container.dispatcher.drain():
        pass
    sent = await asyncio.gather(*(send_due(container, limit=4) for _ in range(3)))
    sent_more = await send_due(container)
    assert sum(sent) + sent_more == 6
    ids = [r.headers["skybook-event-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == 6


async def test_the_sender_loop_delivers_on_its_own(
    network: Network, container: Container, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    container.settings.webhook_sender_interval_seconds = 0.05
    endpoint = await _endpoint(admin, receiver.url, ("hold.created",))
    flight = await network.flight()
    assert (await network.hold(flight["id"])).status_code == 201
    while await container.dispatcher.drain():
        pass
    stop = asyncio.Event()
    task = asyncio.create_task(run_webhook_sender(container, stop))
    try:
        await asyncio.wait_for(receiver.arrived.wait(), timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert _verify(container, receiver.received[0], endpoint["secret"])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("http://127.0.0.1:8080/hook", "https"),
        ("https://[::1]/hook", "loopback"),
        ("https://localhost/hook", "loopback"),
        ("https://10.0.0.5/hook", "private"),
        ("https://192.168.1.20/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://hooks.internal.example/skybook", "private"),  # a name resolving to 10.20.30.40
        ("http://hooks.public.example/skybook", "https"),  # public, but not HTTPS
        ("https://user:pw@hooks.public.example/skybook", "credentials"),  # pragma: allowlist secret
    ],
)
async def test_unsafe_endpoint_urls_are_refused(
    container: Container,
    admin: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    reason: str,
) -> None:
    container.settings.allow_loopback_webhooks = False
    real = socket.getaddrinfo
    fake = {"hooks.internal.example": "10.20.30.40", "hooks.public.example": "93.184.216.34"}

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in fake:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (fake[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    r = await admin.post("/v1/webhook-endpoints", json={"url": url, "event_types": ["order.ticketed"]})
    assert (r.status_code, r.json()["code"]) == (422, "unsafe_url"), r.text
    assert reason in r.json()["detail"]
    assert r.headers["content-type"] == "application/problem+json"
    assert (await admin.get("/v1/webhook-endpoints")).json()["page_info"]["total"] == 0


async def test_the_address_is_checked_again_when_sending(
    network: Network, container: Container, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await _endpoint(admin, receiver.url, ("hold.created",))
    flight = await network.flight()
    assert (await network.hold(flight["id"])).status_code == 201
    container.settings.allow_loopback_webhooks = False  # as if the name now resolved to loopback
    assert await _deliver(container) == 1
    assert receiver.received == []
    [refused] = await _log(admin, endpoint["id"])
    assert refused["status"] == "pending" and refused["last_error"].startswith("refused:")
    assert refused["response_status"] is None and refused["attempts"] == 1


@dataclass
class Dns:
    """A resolver for the names in ``answers``: each resolution takes the next answer (the last one
    repeats); ``asked`` lists the names resolved. Other names resolve for real."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def resolve(self, real: Callable[..., Any], host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode("ascii") if isinstance(host, bytes) else host  # HTTP clients pass IDNA bytes
        if name not in self.answers:
            return real(host, port, *args, **kwargs)
        self.asked.append(name)
        queue = self.answers[name]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    fake, real = Dns(), socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: fake.resolve(real, *a, **k))
    return fake


async def _one_hold(network: Network) -> None:
    flight = await network.flight()
    assert (await network.hold(flight["id"])).status_code == 201


async def test_the_connection_goes_to_the_address_that_was_checked_not_to_a_second_answer(
    network: Network, container: Container, admin: httpx.AsyncClient, receiver: Receiver, dns: Dns
) -> None:
    # DNS rebinding: the name answers the checked address once, then somewhere else. Here the other
    # answer is 127.0.0.2 where nothing listens, so a second resolution would lose the delivery.
    url = f"http://localhost:{receiver.port}/hooks/skybook"
    dns.answers["localhost"] = [["127.0.0.1"]]
    endpoint = await _endpoint(admin, url, ("hold.created",))
    await _one_hold(network)
    dns.asked.clear()
    dns.answers["localhost"] = [["127.0.0.1"], ["127.0.0.2"]]
    assert await _deliver(container) == 1
    [got] = receiver.received  # connecting by name again would have gone to 127.0.0.2
    assert dns.asked == ["localhost"]  # resolved once for the attempt
    assert got.headers["host"] == f"localhost:{receiver.port}"  # the receiver still sees its name
    assert got.path == "/hooks/skybook" and got.headers["connection"] == "close"
    [delivered] = await _log(admin, endpoint["id"])
    assert (delivered["status"], delivered["response_status"]) == ("succeeded", 200)


async def test_a_checked_public_answer_is_what_the_request_is_sent_to_even_if_the_name_rebinds(
    network: Network, container: Container, admin: httpx.AsyncClient, dns: Dns
) -> None:
    # The attack itself, without loopback allowed: public to the check, loopback afterwards. The
    # request is caught by a mock transport (nothing leaves the machine) to see where it would go.
    container.settings.allow_loopback_webhooks = False
    dns.answers["hooks.public.example"] = [["93.184.216.34"]]
    endpoint = await _endpoint(admin, "https://hooks.public.example/skybook?k=1", ("hold.created",))
    await _one_hold(network)
    dns.asked.clear()
    dns.answers["hooks.public.example"] = [["93.184.216.34"], ["127.0.0.1"]]
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        while await container.dispatcher.drain():
            pass
        assert await send_due(container, client=client) == 1
    assert dns.asked == ["hooks.public.example"]
    [request] = sent
    assert str(request.url) == "https://93.184.216.34/skybook?k=1"  # the checked address, not the name
    assert request.headers["host"] == "hooks.public.example"
    assert request.extensions["sni_hostname"] == "hooks.public.example"
    [delivered] = await _log(admin, endpoint["id"])
    assert (delivered["status"], delivered["response_status"]) == ("succeeded", 204)


async def test_a_name_that_gains_a_private_address_among_public_ones_is_sent_nothing(
    network: Network, container: Container, admin: httpx.AsyncClient, dns: Dns
) -> None:
    container.settings.allow_loopback_webhooks = False
    dns.answers["hooks.public.example"] = [["93.184.216.34", "10.0.0.7"]]
    r = await admin.post(
        "/v1/webhook-endpoints", json={"url": "https://hooks.public.example/", "event_types": ["hold.created"]}
    )
    assert (r.status_code, r.json()["code"]) == (422, "unsafe_url") and "private" in r.json()["detail"]
    # Public when registered; at send time one of its addresses is private: nothing is sent at all.
    dns.answers["hooks.public.example"] = [["93.184.216.34"], ["93.184.216.34", "10.0.0.7"]]
    endpoint = await _endpoint(admin, "https://hooks.public.example/", ("hold.created",))
    await _one_hold(network)
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        while await container.dispatcher.drain():
            pass
        assert await send_due(container, client=client) == 1
    assert sent == []
    [refused] = await _log(admin, endpoint["id"])
    assert refused["last_error"].startswith("refused:") and "private" in refused["last_error"]
    assert (refused["status"], refused["attempts"]) == ("pending", 1)


async def test_when_a_checked_address_refuses_the_next_checked_one_is_tried(
    network: Network, container: Container, admin: httpx.AsyncClient, receiver: Receiver, dns: Dns
) -> None:
    dns.answers["localhost"] = [["127.0.0.2", "127.0.0.1"]]  # nothing listens on 127.0.0.2
    endpoint = await _endpoint(admin, f"http://localhost:{receiver.port}/hooks/skybook", ("hold.created",))
    await _one_hold(network)
    dns.asked.clear()
    assert await _deliver(container) == 1
    assert dns.asked == ["localhost"] and len(receiver.received) == 1
    [delivered] = await _log(admin, endpoint["id"])
    assert delivered["status"] == "succeeded"


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``name`` only (no IP address): the receiver's TLS context and
    a client context that trusts just that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[tuple[Receiver, ssl.SSLContext, ssl.SSLContext]]:
    """A receiver speaking TLS with a certificate for hooks.tls.example, and a client context trusting
    it, plus one trusting a certificate for another name."""
    r = Receiver()
    server_ctx, client_ctx = _certificate(tmp_path, "hooks.tls.example")
    _, other_ctx = _certificate(tmp_path, "other.tls.example")

    def seen(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        r.server_names.append(name)

    server_ctx.sni_callback = seen
    async with on_loopback(r.handle, ssl=server_ctx) as r.port:
        yield r, client_ctx, other_ctx


async def test_https_to_the_checked_address_sends_the_name_in_sni_and_host_and_verifies_it(
    network: Network,
    container: Container,
    admin: httpx.AsyncClient,
    dns: Dns,
    tls_receiver: tuple[Receiver, ssl.SSLContext, ssl.SSLContext],
) -> None:
    receiver, trusted, _ = tls_receiver
    dns.answers["hooks.tls.example"] = [["127.0.0.1"]]
    url = f"https://hooks.tls.example:{receiver.port}/hooks/skybook"
    endpoint = await _endpoint(admin, url, ("hold.created",))
    await _one_hold(network)
    while await container.dispatcher.drain():
        pass
    async with httpx.AsyncClient(verify=trusted, trust_env=False) as client:
        assert await send_due(container, client=client) == 1
    # The certificate names hooks.tls.example only: it verified because the name, not the address,
    # was checked against it; the receiver saw the name in the handshake and in Host.
    assert receiver.server_names == ["hooks.tls.example"]
    [got] = receiver.received
    assert got.headers["host"] == f"hooks.tls.example:{receiver.port}"
    [delivered] = await _log(admin, endpoint["id"])
    assert (delivered["status"], delivered["response_status"]) == ("succeeded", 200)


async def test_https_to_a_receiver_whose_certificate_does_not_name_the_host_sends_nothing(
    network: Network,
    container: Container,
    admin: httpx.AsyncClient,
    dns: Dns,
    tls_receiver: tuple[Receiver, ssl.SSLContext, ssl.SSLContext],
) -> None:
    receiver, _, trusts_other = tls_receiver
    dns.answers["other.tls.example"] = [["127.0.0.1"]]  # a name whose certificate the receiver lacks
    endpoint = await _endpoint(admin, f"https://other.tls.example:{receiver.port}/h", ("hold.created",))
    await _one_hold(network)
    while await container.dispatcher.drain():
        pass
    async with httpx.AsyncClient(verify=trusts_other, trust_env=False) as client:
        assert await send_due(container, client=client) == 1
    assert receiver.received == []
    [failed] = await _log(admin, endpoint["id"])
    assert failed["status"] == "pending" and "CERTIFICATE_VERIFY_FAILED" in failed["last_error"]


async def test_event_types_come_from_the_catalogue(admin: httpx.AsyncClient, receiver: Receiver) -> None:
    catalogue = (await admin.get("/v1/webhook-event-types")).json()["items"]
    types = {t["type"] for t in catalogue}
    assert {"order.ticketed", "hold.created", "payment.refunded"} <= types
    assert "inventory.changed" not in types  # operator-side events are not offered
    for bad in (["order.shipped"], ["inventory.changed"], [], ["order.ticketed", 7]):
        r = await admin.post("/v1/webhook-endpoints", json={"url": receiver.url, "event_types": bad})
        assert (r.status_code, r.json()["code"]) == (422, "validation_error"), (bad, r.text)
    created = await _endpoint(admin, receiver.url, ("order.ticketed", "order.ticketed", "hold.created"))
    assert created["event_types"] == ["hold.created", "order.ticketed"]
    r = await admin.patch(f"/v1/webhook-endpoints/{created['id']}", json={"event_types": ["flight.scheduled"]})
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")
    r = await admin.patch(f"/v1/webhook-endpoints/{created['id']}", json={"event_types": ["order.cancelled"]})
    assert r.status_code == 200 and r.json()["event_types"] == ["order.cancelled"]


async def test_another_tenant_can_neither_see_nor_replay_nor_change(
    network: Network,
    container: Container,
    clients: Clients,
    identities: Identities,
    receiver: Receiver,
) -> None:
    a = clients(identities.a_admin)
    endpoint = await _endpoint(a, receiver.url, ("hold.created",))
    flight = await network.flight()
    assert (await network.hold(flight["id"])).status_code == 201
    await _deliver(container)
    [delivery] = await _log(a, endpoint["id"])
    base = f"/v1/webhook-endpoints/{endpoint['id']}"
    b = clients(identities.b_admin)
    assert (await b.get("/v1/webhook-endpoints")).json()["items"] == []
    for method, url, body in (
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate-secret", None),
        ("GET", f"{base}/deliveries", None),
        ("POST", f"{base}/deliveries/{delivery['id']}/replay", None),
        ("POST", f"{base}/replay-failed", {"since": "2020-01-01T00:00:00Z"}),
    ):
        r = await b.request(method, url, json=body)
        assert (r.status_code, r.json()["code"]) == (404, "not_found"), (method, url, r.text)
    # Agents, API keys and travellers do not manage webhooks, not even their own tenant's.
    for party in (identities.a_agent, identities.a_key, identities.traveller):
        r = await clients(party).get(base)
        assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    # A delivery id under another endpoint of the right tenant is not found either.
    other = await _endpoint(a, receiver.url, ("order.ticketed",))
    r = await a.post(f"/v1/webhook-endpoints/{other['id']}/deliveries/{delivery['id']}/replay")
    assert r.status_code == 404
    # Nothing changed for A; A's endpoint can still be deleted by A, its log with it.
    assert (await a.get(base)).json()["enabled"] is True
    assert len(receiver.received) == 1
    assert (await a.delete(base)).status_code == 204
    assert (await a.get(base)).status_code == 404
    async with container.engine.connect() as conn:
        left = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(webhook_deliveries)
            .where(webhook_deliveries.c.endpoint_id == uuid.UUID(endpoint["id"]))
        )
    assert left == 0


async def test_ticketing_is_delivered_once_paid(
    network: Network, container: Container, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await _endpoint(admin, receiver.url, ("order.ticketed", "payment.captured"))
    order = await _hold_and_confirm(network)
    paid = await network.client.post(f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK})
    assert paid.status_code == 200, paid.text
    assert await _deliver(container) == 2
    by_type = {r.event["type"]: r for r in receiver.received}
    assert set(by_type) == {"order.ticketed", "payment.captured"}
    ticketed = by_type["order.ticketed"]
    assert _verify(container, ticketed, endpoint["secret"])
    assert ticketed.event["data"]["record_locator"] == order["record_locator"]


async def test_every_endpoint_change_is_in_the_tenant_audit_log_without_secrets(
    admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await _endpoint(admin, receiver.url + "?token=receiver-token-123", ("hold.created",))
    eid = endpoint["id"]
    assert (await admin.patch(f"/v1/webhook-endpoints/{eid}", json={"enabled": False})).status_code == 200
    rotated = await admin.post(f"/v1/webhook-endpoints/{eid}/rotate-secret")
    assert rotated.status_code == 200
    assert (await admin.delete(f"/v1/webhook-endpoints/{eid}")).status_code == 204

    r = await admin.get("/v1/audit-events", params={"page_size": 50})
    assert r.status_code == 200, r.text
    mine = [e for e in r.json()["items"] if e["target"] == f"webhook_endpoint:{eid}"]
    assert [e["action"] for e in reversed(mine)] == [
        "webhook.endpoint_created",
        "webhook.endpoint_updated",
        "webhook.secret_rotated",
        "webhook.endpoint_deleted",
    ]
    logged = orjson.dumps(mine).decode()
    assert "receiver-token-123" not in logged  # the query string stays out of the log
    assert endpoint["secret"] not in logged and rotated.json()["secret"] not in logged

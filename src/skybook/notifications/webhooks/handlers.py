"""Tenant webhook use cases: manage endpoints, fan events out into deliveries, replay deliveries."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from skybook.identity import audit
from skybook.notifications.webhooks.catalogue import WEBHOOK_EVENT_TYPES
from skybook.notifications.webhooks.crypto import encrypt_secret, new_endpoint_secret
from skybook.notifications.webhooks.tables import webhook_attempts, webhook_deliveries, webhook_endpoints
from skybook.platform.clock import Clock
from skybook.platform.errors import DomainError, NotFound
from skybook.platform.events import Event, uuid7
from skybook.platform.netguard import OutboundTarget, resolve_outbound_url
from skybook.platform.security import Principal
from skybook.platform.uow import UnitOfWork
from skybook.settings import Settings

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
MAX_REPLAY_BATCH = 1000


class WebhookDeps(Protocol):
    """What the webhook use cases need from the composition root."""

    settings: Settings
    clock: Clock
    engine: AsyncEngine

    def uow(self) -> UnitOfWork: ...


class WebhookEndpointDisabled(DomainError):
    code = "webhook_endpoint_disabled"
    status = 409
    title = "Webhook endpoint is disabled"


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def resolve_endpoint_url(url: str, settings: Settings) -> OutboundTarget:
    """Resolve once and check: refuse (``unsafe_url``) anything but HTTPS to public addresses only.

    Tests may allow loopback addresses (``allow_loopback_webhooks``), and plain HTTP only to a
    loopback literal or ``localhost``; private, link-local and reserved addresses never pass.
    """
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""  # resolve_outbound_url refuses it with unsafe_url
    # Plain HTTP only where it cannot leave the machine: loopback, and only when tests allow it.
    plain_ok = settings.allow_loopback_webhooks and _is_loopback_host(host)
    return await resolve_outbound_url(url, allow_loopback=settings.allow_loopback_webhooks, require_https=not plain_ok)


async def check_endpoint_url(url: str, settings: Settings) -> str:
    """The URL if :func:`resolve_endpoint_url` accepts it (registration); raises ``unsafe_url`` otherwise."""
    await resolve_endpoint_url(url, settings)
    return url


def _visible(principal: Principal) -> list[sa.ColumnElement[bool]]:
    tenant = principal.tenant_filter
    return [] if tenant is None else [webhook_endpoints.c.tenant_id == tenant]


async def get_endpoint(conn: AsyncConnection, endpoint_id: uuid.UUID, principal: Principal) -> sa.Row[Any]:
    """The endpoint if the principal's tenant owns it; another tenant's answers like a missing one."""
    row = (
        await conn.execute(
            sa.select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id, *_visible(principal))
        )
    ).first()
    if row is None:
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
    return row


def _lock(query: sa.Select[Any], conn: AsyncConnection) -> sa.Select[Any]:
    return query.with_for_update() if conn.dialect.name == "postgresql" else query


async def _audit(
    uow: UnitOfWork, action: str, principal: Principal, endpoint_id: uuid.UUID, at: datetime, **details: Any
) -> None:
    # Who may receive the tenant's events, and with which secret, is security-relevant: every
    # change is in the tenant's audit log, in the transaction that makes it. Never the secret.
    await audit.record(
        uow.conn,
        action=action,
        at=at,
        tenant_id=principal.tenant_id,
        actor_id=principal.id,
        target=f"webhook_endpoint:{endpoint_id}",
        **details,
    )


def _without_secrets(url: str) -> str:
    # Receivers often put a token in the query string or the user part: neither goes to the log.
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    id: uuid.UUID
    secret: str


async def create_endpoint(
    url: str, event_types: list[str], description: str, principal: Principal, deps: WebhookDeps
) -> CreatedEndpoint:
    """Register an endpoint for the principal's tenant; the secret is returned here only."""
    await check_endpoint_url(url, deps.settings)
    secret = new_endpoint_secret()
    endpoint_id = uuid7()
    now = deps.clock.now()
    async with deps.uow() as uow:
        await uow.conn.execute(
            webhook_endpoints.insert().values(
                id=endpoint_id,
                tenant_id=principal.tenant_id,
                url=url,
                description=description,
                event_types=_normalized(event_types),
                enabled=True,
                secret_ciphertext=encrypt_secret(secret, secret_key=deps.settings.secret_key),
                created_by=principal.id if principal.kind == "user" else None,
                created_at=now,
                updated_at=now,
            )
        )
        await _audit(
            uow,
            "webhook.endpoint_created",
            principal,
            endpoint_id,
            now,
            url=_without_secrets(url),
            event_types=event_types,
        )
        await uow.commit()
    return CreatedEndpoint(endpoint_id, secret)


def _normalized(event_types: list[str]) -> list[str]:
    unknown = set(event_types) - WEBHOOK_EVENT_TYPES
    if unknown:  # the API schema refuses these already; a direct caller gets the same answer
        raise ValueError(f"unknown event types: {sorted(unknown)}")
    return sorted(set(event_types))


async def update_endpoint(
    endpoint_id: uuid.UUID, changes: dict[str, Any], principal: Principal, deps: WebhookDeps
) -> None:
    """Change event types, description or enabled (only the fields given)."""
    async with deps.uow() as uow:
        await get_endpoint(uow.conn, endpoint_id, principal)
        values = dict(changes)
        if "event_types" in values:
            values["event_types"] = _normalized(values["event_types"])
        now = deps.clock.now()
        await uow.conn.execute(
            webhook_endpoints.update().where(webhook_endpoints.c.id == endpoint_id).values(**values, updated_at=now)
        )
        await _audit(uow, "webhook.endpoint_updated", principal, endpoint_id, now, changes=values)
        await uow.commit()


async def delete_endpoint(endpoint_id: uuid.UUID, principal: Principal, deps: WebhookDeps) -> None:
    """Remove an endpoint and its delivery log; nothing more is sent to it."""
    async with deps.uow() as uow:
        await get_endpoint(uow.conn, endpoint_id, principal)
        # Explicit rather than relying on ON DELETE CASCADE, which SQLite honours only with its pragma.
        delivery_ids = sa.select(webhook_deliveries.c.id).where(webhook_deliveries.c.endpoint_id == endpoint_id)
        await uow.conn.execute(webhook_attempts.delete().where(webhook_attempts.c.delivery_id.in_(delivery_ids)))
        await uow.conn.execute(webhook_deliveries.delete().where(webhook_deliveries.c.endpoint_id == endpoint_id))
        await uow.conn.execute(webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id))
        await _audit(uow, "webhook.endpoint_deleted", principal, endpoint_id, deps.clock.now())
        await uow.commit()


async def rotate_secret(endpoint_id: uuid.UUID, principal: Principal, deps: WebhookDeps) -> tuple[str, datetime | None]:
    """A new secret (returned once); the old one keeps signing too until the grace period ends."""
    secret = new_endpoint_secret()
    now = deps.clock.now()
    grace = timedelta(seconds=deps.settings.webhook_secret_grace_seconds)
    async with deps.uow() as uow:
        row = (
            await uow.conn.execute(
                _lock(
                    sa.select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id, *_visible(principal)),
                    uow.conn,
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
        expires = now + grace if grace else None
        await uow.conn.execute(
            webhook_endpoints.update()
            .where(webhook_endpoints.c.id == endpoint_id)
            .values(
                secret_ciphertext=encrypt_secret(secret, secret_key=deps.settings.secret_key),
                previous_secret_ciphertext=row.secret_ciphertext if expires else None,
                previous_secret_expires_at=expires,
                updated_at=now,
            )
        )
        await _audit(
            uow,
            "webhook.secret_rotated",
            principal,
            endpoint_id,
            now,
            previous_secret_valid_until=expires.isoformat() if expires else None,
        )
        await uow.commit()
    return secret, expires


async def _replay_rows(conn: AsyncConnection, originals: list[sa.Row[Any]], now: datetime) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    rows = []
    for original in originals:
        new_id = uuid7()
        ids.append(new_id)
        rows.append(
            {
                "id": new_id,
                "endpoint_id": original.endpoint_id,
                "tenant_id": original.tenant_id,
                "event_id": original.event_id,
                "event_type": original.event_type,
                "payload": original.payload,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "replay_of": original.id,
                "created_at": now,
            }
        )
    if rows:
        await conn.execute(webhook_deliveries.insert(), rows)
    return ids


async def replay_delivery(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, principal: Principal, deps: WebhookDeps
) -> uuid.UUID:
    """Send a delivery's event again, as a new delivery in the log pointing at the original."""
    async with deps.uow() as uow:
        endpoint = await get_endpoint(uow.conn, endpoint_id, principal)
        original = (
            await uow.conn.execute(
                sa.select(webhook_deliveries).where(
                    webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.endpoint_id == endpoint_id
                )
            )
        ).first()
        if original is None:
            raise NotFound(f"webhook delivery {delivery_id} does not exist")
        if not endpoint.enabled:
            raise WebhookEndpointDisabled("enable the endpoint before replaying deliveries to it")
        [new_id] = await _replay_rows(uow.conn, [original], deps.clock.now())
        await uow.commit()
    return new_id


async def replay_failed(
    endpoint_id: uuid.UUID, since: datetime, principal: Principal, deps: WebhookDeps
) -> list[uuid.UUID]:
    """Replay every failed delivery of the endpoint created at or after ``since`` (bounded batch)."""
    async with deps.uow() as uow:
        endpoint = await get_endpoint(uow.conn, endpoint_id, principal)
        if not endpoint.enabled:
            raise WebhookEndpointDisabled("enable the endpoint before replaying deliveries to it")
        d = webhook_deliveries.c
        originals = list(
            await uow.conn.execute(
                sa.select(webhook_deliveries)
                .where(d.endpoint_id == endpoint_id, d.status == FAILED, d.created_at >= since)
                .order_by(d.created_at, d.id)
                .limit(MAX_REPLAY_BATCH)
            )
        )
        ids = await _replay_rows(uow.conn, originals, deps.clock.now())
        await uow.commit()
    return ids


# Built once: this runs for every event of every tenant, most of which have no endpoint at all.
_ENABLED_ENDPOINTS_OF_TENANT = sa.select(webhook_endpoints.c.id, webhook_endpoints.c.event_types).where(
    webhook_endpoints.c.tenant_id == sa.bindparam("tenant", type_=webhook_endpoints.c.tenant_id.type),
    webhook_endpoints.c.enabled.is_(True),
)


class WebhookFanout:
    """The consumer: one pending delivery per enabled endpoint of the event's tenant subscribed to it.

    It runs in the consumer's transaction, next to the inbox row, so a redelivered event creates
    no second set of deliveries.
    """

    name = "webhooks"
    event_types = WEBHOOK_EVENT_TYPES

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def __call__(self, event: Event, uow: UnitOfWork) -> None:
        if event.tenant_id is None:
            return
        try:
            tenant = uuid.UUID(event.tenant_id)
        except ValueError:
            return
        endpoints = await uow.conn.execute(_ENABLED_ENDPOINTS_OF_TENANT, {"tenant": tenant})
        now = self._clock.now()
        payload = event.envelope()
        rows = [
            {
                "id": uuid7(),
                "endpoint_id": endpoint.id,
                "tenant_id": tenant,
                "event_id": event.id,
                "event_type": event.type,
                "payload": payload,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for endpoint in endpoints
            if event.type in endpoint.event_types
        ]
        if rows:
            await uow.conn.execute(webhook_deliveries.insert(), rows)

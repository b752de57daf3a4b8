"""HTTP routes of tenant webhooks: endpoints, secrets, the delivery log and replays (tenant admins)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, status
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.notifications.webhooks import handlers
from skybook.notifications.webhooks.catalogue import EVENT_DESCRIPTIONS, WEBHOOK_EVENT_TYPES
from skybook.notifications.webhooks.schemas import (
    WebhookAttemptRead,
    WebhookDeliveryPage,
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointPage,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
    WebhookEventTypeList,
    WebhookEventTypeRead,
    WebhookReplayed,
    WebhookReplayFailed,
    WebhookSecret,
)
from skybook.notifications.webhooks.tables import webhook_attempts, webhook_deliveries, webhook_endpoints
from skybook.platform.deps import ContainerDep, ReadConn, require_roles
from skybook.platform.http import Paging, error_responses
from skybook.platform.security import Principal, Role

router = APIRouter(prefix="/v1", tags=["Webhooks"])

# A tenant's webhooks are its admins' business (platform admins see every tenant's).
WebhookAdmin = Annotated[Principal, Depends(require_roles(Role.TENANT_ADMIN, Role.PLATFORM_ADMIN))]
EndpointId = Annotated[uuid.UUID, Path(description="Webhook endpoint id.")]
DeliveryId = Annotated[uuid.UUID, Path(description="Webhook delivery id.")]


async def _endpoint_read(conn: AsyncConnection, endpoint_id: uuid.UUID, principal: Principal) -> WebhookEndpointRead:
    return WebhookEndpointRead.model_validate(await handlers.get_endpoint(conn, endpoint_id, principal))


async def _deliveries(conn: AsyncConnection, rows: list[sa.Row[Any]]) -> list[WebhookDeliveryRead]:
    attempts: dict[uuid.UUID, list[WebhookAttemptRead]] = {r.id: [] for r in rows}
    if rows:
        a = webhook_attempts.c
        for row in await conn.execute(
            sa.select(webhook_attempts).where(a.delivery_id.in_(list(attempts))).order_by(a.delivery_id, a.number)
        ):
            attempts[row.delivery_id].append(WebhookAttemptRead.model_validate(row))
    return [WebhookDeliveryRead.model_validate({**r._mapping, "attempt_log": attempts[r.id]}) for r in rows]


@router.get(
    "/webhook-event-types",
    operation_id="listWebhookEventTypes",
    summary="List webhook event types",
    response_model=WebhookEventTypeList,
    responses=error_responses(401, 403, 429),
)
async def list_event_types(principal: WebhookAdmin) -> WebhookEventTypeList:
    """The event types an endpoint can subscribe to."""
    return WebhookEventTypeList(
        items=[WebhookEventTypeRead(type=t, description=EVENT_DESCRIPTIONS[t]) for t in sorted(WEBHOOK_EVENT_TYPES)]
    )


@router.post(
    "/webhook-endpoints",
    operation_id="createWebhookEndpoint",
    summary="Register a webhook endpoint",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookEndpointCreated,
    responses=error_responses(400, 401, 403, 413, 415, 422, 429),
)
async def create_endpoint(
    body: WebhookEndpointCreate, principal: WebhookAdmin, container: ContainerDep
) -> WebhookEndpointCreated:
    """Register an HTTPS endpoint for your tenant's events. The answer holds its signing secret,
    shown only here. A URL whose host resolves to a loopback, private or link-local address is
    refused with ``unsafe_url``."""
    created = await handlers.create_endpoint(body.url, list(body.event_types), body.description, principal, container)
    async with container.engine.connect() as conn:
        endpoint = await _endpoint_read(conn, created.id, principal)
    return WebhookEndpointCreated(**endpoint.model_dump(), secret=created.secret)


@router.get(
    "/webhook-endpoints",
    operation_id="listWebhookEndpoints",
    summary="List webhook endpoints",
    response_model=WebhookEndpointPage,
    responses=error_responses(401, 403, 422, 429),
)
async def list_endpoints(
    principal: WebhookAdmin, conn: ReadConn, paging: Annotated[Paging, Depends()]
) -> WebhookEndpointPage:
    """Your tenant's webhook endpoints (platform admins: every tenant's)."""
    e = webhook_endpoints.c
    where = [] if principal.tenant_filter is None else [e.tenant_id == principal.tenant_filter]
    rows, page_info = await paging.fetch(conn, webhook_endpoints, where=where, order_by=[e.created_at, e.id])
    return WebhookEndpointPage(items=[WebhookEndpointRead.model_validate(r) for r in rows], page_info=page_info)


@router.get(
    "/webhook-endpoints/{endpoint_id}",
    operation_id="getWebhookEndpoint",
    summary="Get a webhook endpoint",
    response_model=WebhookEndpointRead,
    responses=error_responses(401, 403, 404, 422, 429),
)
async def get_endpoint(endpoint_id: EndpointId, principal: WebhookAdmin, conn: ReadConn) -> WebhookEndpointRead:
    """One of your tenant's webhook endpoints."""
    return await _endpoint_read(conn, endpoint_id, principal)


@router.patch(
    "/webhook-endpoints/{endpoint_id}",
    operation_id="updateWebhookEndpoint",
    summary="Change a webhook endpoint",
    response_model=WebhookEndpointRead,
    responses=error_responses(400, 401, 403, 404, 413, 415, 422, 429),
)
async def update_endpoint(
    endpoint_id: EndpointId, body: WebhookEndpointUpdate, principal: WebhookAdmin, container: ContainerDep
) -> WebhookEndpointRead:
    """Change the event types, the description, or pause and resume deliveries (``enabled``)."""
    await handlers.update_endpoint(endpoint_id, body.changes(), principal, container)
    async with container.engine.connect() as conn:
        return await _endpoint_read(conn, endpoint_id, principal)


@router.delete(
    "/webhook-endpoints/{endpoint_id}",
    operation_id="deleteWebhookEndpoint",
    summary="Delete a webhook endpoint",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 422, 429),
)
async def delete_endpoint(endpoint_id: EndpointId, principal: WebhookAdmin, container: ContainerDep) -> None:
    """Remove an endpoint with its delivery log; nothing more is sent to it."""
    await handlers.delete_endpoint(endpoint_id, principal, container)


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    operation_id="rotateWebhookSecret",
    summary="Rotate a webhook signing secret",
    response_model=WebhookSecret,
    responses=error_responses(400, 401, 403, 404, 413, 422, 429),
)
async def rotate_secret(endpoint_id: EndpointId, principal: WebhookAdmin, container: ContainerDep) -> WebhookSecret:
    """A new signing secret, shown only here. Until ``previous_secret_expires_at`` each delivery
    carries two ``v1`` signatures, one per secret, so receivers can switch without losing any."""
    secret, expires = await handlers.rotate_secret(endpoint_id, principal, container)
    return WebhookSecret(secret=secret, previous_secret_expires_at=expires)


@router.get(
    "/webhook-endpoints/{endpoint_id}/deliveries",
    operation_id="listWebhookDeliveries",
    summary="List an endpoint's deliveries",
    response_model=WebhookDeliveryPage,
    responses=error_responses(401, 403, 404, 422, 429),
)
async def list_deliveries(
    endpoint_id: EndpointId,
    principal: WebhookAdmin,
    conn: ReadConn,
    paging: Annotated[Paging, Depends()],
    delivery_status: Annotated[
        str | None,
        Query(alias="status", pattern="^(pending|succeeded|failed)$", description="Only deliveries in this status."),
    ] = None,
) -> WebhookDeliveryPage:
    """The delivery log of an endpoint, newest first, with every attempt's answer and error."""
    await handlers.get_endpoint(conn, endpoint_id, principal)
    d = webhook_deliveries.c
    where = [d.endpoint_id == endpoint_id]
    if delivery_status is not None:
        where.append(d.status == delivery_status)
    newest_first: list[sa.ColumnElement[Any]] = [d.created_at.desc(), d.id.desc()]
    rows, page_info = await paging.fetch(conn, webhook_deliveries, where=where, order_by=newest_first)
    return WebhookDeliveryPage(items=await _deliveries(conn, rows), page_info=page_info)


@router.post(
    "/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/replay",
    operation_id="replayWebhookDelivery",
    summary="Replay a webhook delivery",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookDeliveryRead,
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429),
)
async def replay_delivery(
    endpoint_id: EndpointId, delivery_id: DeliveryId, principal: WebhookAdmin, container: ContainerDep
) -> WebhookDeliveryRead:
    """Send a delivery's event again (same body and ``Skybook-Event-Id``, fresh signature), as a new
    delivery in the log whose ``replay_of`` names the original."""
    new_id = await handlers.replay_delivery(endpoint_id, delivery_id, principal, container)
    async with container.engine.connect() as conn:
        rows = list(await conn.execute(sa.select(webhook_deliveries).where(webhook_deliveries.c.id == new_id)))
        [delivery] = await _deliveries(conn, rows)
    return delivery


@router.post(
    "/webhook-endpoints/{endpoint_id}/replay-failed",
    operation_id="replayFailedWebhookDeliveries",
    summary="Replay failed webhook deliveries",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookReplayed,
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429),
)
async def replay_failed(
    endpoint_id: EndpointId, body: WebhookReplayFailed, principal: WebhookAdmin, container: ContainerDep
) -> WebhookReplayed:
    """Replay every delivery of the endpoint that failed (retries exhausted) since a time."""
    ids = await handlers.replay_failed(endpoint_id, body.since, principal, container)
    return WebhookReplayed(delivery_ids=ids)

"""The webhook sender: posts due deliveries, records every attempt, retries with backoff, gives up in time.

Several senders may run (API replicas, worker processes): on PostgreSQL each claims its batch with
``FOR UPDATE SKIP LOCKED`` and leases it by pushing ``next_attempt_at`` past the attempt's time
limit, so no transaction stays open while a receiver answers and no other sender takes the same
delivery meanwhile. A sender that dies mid-attempt leaves the lease to run out, and the delivery is
attempted again (receivers deduplicate by ``Skybook-Event-Id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from prometheus_client import Counter

from skybook import __version__
from skybook.notifications.webhooks.crypto import decrypt_secret
from skybook.notifications.webhooks.handlers import FAILED, PENDING, SUCCEEDED, WebhookDeps, resolve_endpoint_url
from skybook.notifications.webhooks.signing import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature_header,
)
from skybook.notifications.webhooks.tables import webhook_attempts, webhook_deliveries, webhook_endpoints
from skybook.platform.errors import DomainError
from skybook.platform.netguard import OutboundTarget

log = logging.getLogger("skybook.webhooks")

DELIVERIES = Counter(
    "skybook_webhook_deliveries_total",
    "Webhook delivery attempts by result: succeeded, retrying (failed, will retry) or failed (gave up).",
    ["result"],
)
BATCH_SIZE = 50
MAX_ERROR_CHARS = 500
# Checked addresses tried per attempt when connecting fails (an IPv6 address without a route, then
# IPv4); bounded so that an attempt stays well inside its lease.
MAX_ADDRESSES_PER_ATTEMPT = 2


@dataclass(frozen=True, slots=True)
class _Due:
    id: uuid.UUID
    attempts: int
    created_at: datetime
    payload: dict[str, Any]
    event_id: uuid.UUID
    event_type: str
    url: str
    secret_ciphertext: str
    previous_secret_ciphertext: str | None
    previous_secret_expires_at: datetime | None


def retry_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number ``attempt``: doubling from ``base``, capped, jittered.

    The jitter (a random 50-100 % of the delay) keeps the retries of many deliveries that failed
    together, e.g. while a receiver was down, from arriving together again.
    """
    delay: float = min(cap, base * 2 ** min(attempt - 1, 32))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 (spreading retries, not a secret)


async def _claim(deps: WebhookDeps, now: datetime, limit: int) -> list[_Due]:
    d, e = webhook_deliveries.c, webhook_endpoints.c
    lease = now + timedelta(seconds=2 * deps.settings.webhook_timeout_seconds + 30)
    async with deps.uow() as uow:
        query = (
            sa.select(
                d.id,
                d.attempts,
                d.created_at,
                d.payload,
                d.event_id,
                d.event_type,
                e.url,
                e.secret_ciphertext,
                e.previous_secret_ciphertext,
                e.previous_secret_expires_at,
            )
            .join(webhook_endpoints, e.id == d.endpoint_id)
            # A disabled endpoint's deliveries wait: they go out if it is enabled again in time.
            .where(d.status == PENDING, d.next_attempt_at <= now, e.enabled.is_(True))
            .order_by(d.next_attempt_at)
            .limit(limit)
        )
        if uow.conn.dialect.name == "postgresql":
            query = query.with_for_update(of=webhook_deliveries, skip_locked=True)
        due = [_Due(**row._mapping) for row in await uow.conn.execute(query)]
        if due:
            await uow.conn.execute(
                webhook_deliveries.update().where(d.id.in_([x.id for x in due])).values(next_attempt_at=lease)
            )
        await uow.commit()
    return due


def _secrets(due: _Due, deps: WebhookDeps, now: datetime) -> list[str]:
    key = deps.settings.secret_key
    secrets = [decrypt_secret(due.secret_ciphertext, secret_key=key)]
    if due.previous_secret_ciphertext and due.previous_secret_expires_at and due.previous_secret_expires_at > now:
        secrets.append(decrypt_secret(due.previous_secret_ciphertext, secret_key=key))
    return secrets


async def _post_pinned(
    client: httpx.AsyncClient, target: OutboundTarget, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """POST to the addresses that were checked, never to the name (which would be resolved again).

    The URL carries the address; the ``Host`` header and, for https, the TLS SNI name and the
    certificate check keep the registered host name. ``Connection: close``: a connection is used
    for one attempt only, so no later attempt (or another endpoint's, whose name may share the
    address but not the certificate) reuses one that was set up for other checks.
    """
    headers = {**headers, "Connection": "close"}

    async def to(address: str) -> httpx.Response:
        pinned = target.pinned(address)
        return await client.post(
            pinned.url,
            content=body,
            headers={**headers, "Host": pinned.host_header},
            extensions={"sni_hostname": pinned.sni_hostname},
            follow_redirects=False,
        )

    *first, last = target.addresses[:MAX_ADDRESSES_PER_ATTEMPT]
    for address in first:
        with contextlib.suppress(httpx.ConnectError):  # refused, unreachable, TLS failed: the next one
            return await to(address)
    return await to(last)


async def _attempt(due: _Due, deps: WebhookDeps, client: httpx.AsyncClient) -> tuple[int | None, str | None]:
    """Post once; (response status, error) where error is None on a 2xx answer."""
    now = deps.clock.now()
    try:
        # Resolved and checked for every attempt (the name may resolve elsewhere than when it was
        # registered), and the connection goes to the checked addresses only (DNS rebinding).
        target = await resolve_endpoint_url(due.url, deps.settings)
    except DomainError as exc:
        return None, f"refused: {exc.detail}"
    body = orjson.dumps(due.payload)
    timestamp = int(now.timestamp())
    try:
        signature = signature_header(_secrets(due, deps, now), timestamp, body)
    except ValueError as exc:
        return None, str(exc)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"Skybook-Webhooks/{__version__}",
        SIGNATURE_HEADER: signature,
        EVENT_ID_HEADER: str(due.event_id),
        EVENT_TYPE_HEADER: due.event_type,
        TIMESTAMP_HEADER: str(timestamp),
    }
    try:
        response = await _post_pinned(client, target, body, headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] or type(exc).__name__
    if 200 <= response.status_code < 300:
        return response.status_code, None
    # Redirects are not followed: a 3xx is a failure like any other non-2xx answer.
    return response.status_code, f"HTTP {response.status_code}"


async def _record(due: _Due, status: int | None, error: str | None, duration_ms: int, deps: WebhookDeps) -> str:
    now = deps.clock.now()
    number = due.attempts + 1
    values: dict[str, Any] = {
        "attempts": number,
        "last_attempt_at": now,
        "response_status": status,
        "last_error": error,
    }
    if error is None:
        result = SUCCEEDED
        values.update(status=SUCCEEDED, next_attempt_at=None, completed_at=now)
    else:
        s = deps.settings
        retry_at = now + timedelta(
            seconds=retry_delay(number, base=s.webhook_retry_base_seconds, cap=s.webhook_retry_max_delay_seconds)
        )
        if retry_at > due.created_at + timedelta(seconds=s.webhook_max_age_seconds):
            result = FAILED
            values.update(status=FAILED, next_attempt_at=None, completed_at=now)
        else:
            result = "retrying"
            values.update(next_attempt_at=retry_at)
    async with deps.uow() as uow:
        await uow.conn.execute(
            webhook_attempts.insert().values(
                delivery_id=due.id,
                number=number,
                attempted_at=now,
                response_status=status,
                error=error,
                duration_ms=duration_ms,
            )
        )
        await uow.conn.execute(
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id == due.id, webhook_deliveries.c.status == PENDING)
            .values(**values)
        )
        await uow.commit()
    DELIVERIES.labels(result=result).inc()
    return result


async def send_due(deps: WebhookDeps, *, limit: int = BATCH_SIZE, client: httpx.AsyncClient | None = None) -> int:
    """Attempt every due delivery (up to ``limit``) once, concurrently; returns how many were attempted."""
    due = await _claim(deps, deps.clock.now(), limit)
    if not due:
        return 0
    own = client is None
    http = client or httpx.AsyncClient(
        timeout=httpx.Timeout(deps.settings.webhook_timeout_seconds),
        follow_redirects=False,
        trust_env=False,  # an HTTP(S)_PROXY from the environment must not reroute tenant traffic
    )

    async def one(item: _Due) -> None:
        started = time.perf_counter()
        max_age = timedelta(seconds=deps.settings.webhook_max_age_seconds)
        status: int | None
        error: str | None
        if deps.clock.now() > item.created_at + max_age:
            # Waited too long (its endpoint was disabled meanwhile): too stale to send now.
            status, error = None, "expired before it could be sent"
        else:
            status, error = await _attempt(item, deps, http)
        await _record(item, status, error, int((time.perf_counter() - started) * 1000), deps)

    try:
        results = await asyncio.gather(*(one(x) for x in due), return_exceptions=True)
    finally:
        if own:
            await http.aclose()
    for item, result in zip(due, results, strict=True):
        if isinstance(result, BaseException):
            # Not recorded: the lease runs out and the delivery is attempted again.
            log.error("webhook delivery %s could not be recorded", item.id, exc_info=result)
    return len(due)


async def run_webhook_sender(deps: WebhookDeps, stop: asyncio.Event | None = None) -> None:
    """Send due webhook deliveries until cancelled (or ``stop`` is set); for the API lifespan and workers."""
    stop = stop or asyncio.Event()
    interval = deps.settings.webhook_sender_interval_seconds
    while not stop.is_set():
        try:
            sent = await send_due(deps)
        except Exception:
            log.exception("webhook sender round failed")
            sent = 0
        if sent < BATCH_SIZE:  # a full batch means more may be due right away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

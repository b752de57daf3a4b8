"""Append-only audit log of security events, readable by tenant admins for their tenant."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.identity.tables import audit_log


async def record(
    conn: AsyncConnection,
    *,
    action: str,
    at: datetime,
    tenant_id: uuid.UUID | None = None,
    actor_id: uuid.UUID | None = None,
    target: str | None = None,
    ip: str | None = None,
    **details: Any,
) -> None:
    """Append one security event in the caller's transaction."""
    await conn.execute(
        sa.insert(audit_log).values(
            tenant_id=tenant_id,
            actor_id=actor_id,
            action=action,
            target=target,
            ip=ip,
            occurred_at=at,
            details=details,
        )
    )

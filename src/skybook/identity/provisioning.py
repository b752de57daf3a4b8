"""Creating tenants and accounts outside the API: the first platform admin, the demo accounts."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.identity import audit
from skybook.identity.handlers import insert_user
from skybook.identity.model import check_password_policy, normalise_email
from skybook.identity.tables import tenants, users
from skybook.platform.events import uuid7
from skybook.platform.security import Role


async def ensure_tenant(conn: AsyncConnection, *, name: str, kind: str, plan: str, now: datetime) -> uuid.UUID:
    """The tenant with this name, created if missing."""
    existing = await conn.scalar(sa.select(tenants.c.id).where(tenants.c.name == name))
    if existing is not None:
        return uuid.UUID(str(existing))
    tenant_id = uuid7()
    await conn.execute(sa.insert(tenants).values(id=tenant_id, name=name, kind=kind, plan_code=plan, created_at=now))
    return tenant_id


async def ensure_user(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    email: str,
    role: Role,
    password: str,
    password_hash: str,
    now: datetime,
) -> tuple[uuid.UUID, bool]:
    """The active user with this e-mail, created if missing; returns (id, created)."""
    email = normalise_email(email)
    check_password_policy(password, email=email)
    existing = await conn.scalar(sa.select(users.c.id).where(users.c.email == email))
    if existing is not None:
        return uuid.UUID(str(existing)), False
    user_id = await insert_user(conn, tenant_id=tenant_id, email=email, role=role, now=now, password_hash=password_hash)
    await audit.record(conn, action="user.provisioned", at=now, tenant_id=tenant_id, target=email, role=str(role))
    return user_id, True

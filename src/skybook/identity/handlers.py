"""Identity use cases: sign-up, login, token refresh and rotation, logout, invitations, roles, API keys."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook.identity import audit
from skybook.identity.model import (
    Forbidden,
    InvalidCredentials,
    TooManyAttempts,
    check_password_policy,
    normalise_email,
    roles_grantable_by,
)
from skybook.identity.passwords import Passwords
from skybook.identity.tables import api_keys, plans, refresh_tokens, tenants, users
from skybook.identity.tables import identity_version as identity_version_table
from skybook.identity.tokens import TokenService, digest, new_secret
from skybook.platform.clock import Clock
from skybook.platform.errors import Busy, Conflict, InvalidRequest, NotFound
from skybook.platform.events import uuid7
from skybook.platform.ratelimit import LimiterUnavailable, RateLimiter
from skybook.platform.security import ALL_SCOPES, Principal, Role
from skybook.platform.uow import UnitOfWork

DIRECT_TENANT = "Direct sales"

# Brute-force guard: failures counted per account and per client address.
ACCOUNT_FAILURES_PER_MINUTE = 5
IP_FAILURES_PER_MINUTE = 20
FAILURE_DELAY_STEP = 0.25
FAILURE_DELAY_MAX = 2.0


class IdentityDeps(Protocol):
    @property
    def clock(self) -> Clock: ...
    @property
    def passwords(self) -> Passwords: ...
    @property
    def tokens(self) -> TokenService: ...
    @property
    def limiter(self) -> RateLimiter: ...
    @property
    def refresh_ttl(self) -> timedelta: ...

    async def pause(self, seconds: float) -> None: ...

    def uow(self) -> UnitOfWork: ...


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a successful login or refresh returns."""

    access_token: str
    expires_at: datetime
    refresh_token: str | None


@dataclass(frozen=True, slots=True)
class PrincipalRow:
    """What authentication needs to know about a subject, cached for at most a second."""

    principal: Principal
    session_version: int
    active: bool


_PLAN_LIMITS = (plans.c.requests_per_minute, plans.c.tenant_requests_per_minute, plans.c.max_unpaid_seats)


def _principal(row: Any, **fields: Any) -> Principal:
    return Principal(
        tenant_id=row.tenant_id,
        plan=row.plan_code,
        rate_limit=row.requests_per_minute,
        tenant_rate_limit=row.tenant_requests_per_minute,
        max_unpaid_seats=row.max_unpaid_seats,
        **fields,
    )


_USER_COLUMNS = (
    users.c.id,
    users.c.tenant_id,
    users.c.role,
    users.c.status,
    users.c.email,
    users.c.session_version,
    tenants.c.plan_code,
    *_PLAN_LIMITS,
)
_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.tenant_id,
    api_keys.c.scopes,
    api_keys.c.revoked_at,
    tenants.c.plan_code,
    *_PLAN_LIMITS,
)
_USERS_WITH_PLAN = (
    sa.select(*_USER_COLUMNS)
    .join(tenants, tenants.c.id == users.c.tenant_id)
    .join(plans, plans.c.code == tenants.c.plan_code)
)
_KEYS_WITH_PLAN = (
    sa.select(*_KEY_COLUMNS)
    .join(tenants, tenants.c.id == api_keys.c.tenant_id)
    .join(plans, plans.c.code == tenants.c.plan_code)
)
# Built once; the ids arrive as parameters (an expanding IN for the batch look-up).
_ONE_USER = _USERS_WITH_PLAN.where(users.c.id == sa.bindparam("subject"))
_ONE_KEY = _KEYS_WITH_PLAN.where(api_keys.c.id == sa.bindparam("subject"))
_SOME_USERS = _USERS_WITH_PLAN.where(users.c.id.in_(sa.bindparam("subjects", expanding=True)))
_SOME_KEYS = _KEYS_WITH_PLAN.where(api_keys.c.id.in_(sa.bindparam("subjects", expanding=True)))
_BATCH = 500


def _user_row(row: Any) -> PrincipalRow:
    principal = _principal(row, id=row.id, kind="user", role=Role(row.role), email=row.email)
    return PrincipalRow(principal, row.session_version, row.status == "active")


def _key_row(row: Any) -> PrincipalRow:
    principal = _principal(row, id=row.id, kind="api_key", role=Role.AGENT, scopes=frozenset(row.scopes))
    return PrincipalRow(principal, 0, row.revoked_at is None)


async def load_principal(conn: AsyncConnection, subject: uuid.UUID, kind: str) -> PrincipalRow | None:
    """The principal behind a token subject (a user or an API key), with its plan's limits."""
    if kind == "user":
        row = (await conn.execute(_ONE_USER, {"subject": subject})).first()
        return None if row is None else _user_row(row)
    if kind == "api_key":
        key = (await conn.execute(_ONE_KEY, {"subject": subject})).first()
        return None if key is None else _key_row(key)
    return None


async def load_principals(
    conn: AsyncConnection, subjects: list[tuple[str, uuid.UUID]]
) -> dict[tuple[str, uuid.UUID], PrincipalRow | None]:
    """``load_principal`` for many subjects at once: one query per kind and 500 subjects."""
    found: dict[tuple[str, uuid.UUID], PrincipalRow | None] = dict.fromkeys(subjects)
    for kind, stmt, convert in (("user", _SOME_USERS, _user_row), ("api_key", _SOME_KEYS, _key_row)):
        ids = [subject for k, subject in subjects if k == kind]
        for start in range(0, len(ids), _BATCH):
            for row in await conn.execute(stmt, {"subjects": ids[start : start + _BATCH]}):
                found[(kind, row.id)] = convert(row)
    return found


_VERSION = sa.select(identity_version_table.c.version).where(identity_version_table.c.id == 1)


async def identity_version(conn: AsyncConnection) -> int:
    """The change counter that triggers move with every change authentication must see (-1 if absent)."""
    version = await conn.scalar(_VERSION)
    return -1 if version is None else int(version)


async def api_key_subject(conn: AsyncConnection, credential: str, now: datetime) -> uuid.UUID | None:
    """The API key a presented ``sbk_<prefix>_<secret>`` credential belongs to, if valid."""
    parts = credential.split("_", 2)
    if len(parts) != 3 or parts[0] != "sbk":
        return None
    row = (
        await conn.execute(
            sa.select(api_keys.c.id, api_keys.c.secret_hash, api_keys.c.revoked_at).where(api_keys.c.prefix == parts[1])
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, digest(credential)):
        return None
    return uuid.UUID(str(row.id))


async def insert_user(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    email: str,
    role: Role,
    now: datetime,
    password_hash: str | None = None,
    invitation_hash: str | None = None,
) -> uuid.UUID:
    """Insert a user: active with a password hash, or invited (for seven days) with an invitation hash."""
    user_id = uuid7()
    await conn.execute(
        sa.insert(users).values(
            id=user_id,
            tenant_id=tenant_id,
            email=email,
            password_hash=password_hash,
            role=role,
            status="invited" if invitation_hash else "active",
            session_version=1,
            invitation_hash=invitation_hash,
            invitation_expires_at=now + timedelta(days=7) if invitation_hash else None,
            created_at=now,
        )
    )
    return user_id


async def _direct_tenant(conn: AsyncConnection, now: datetime) -> uuid.UUID:
    tid = await conn.scalar(sa.select(tenants.c.id).where(tenants.c.kind == "direct"))
    if tid is not None:
        return uuid.UUID(str(tid))
    tid = uuid7()
    await conn.execute(
        sa.insert(tenants).values(id=tid, name=DIRECT_TENANT, kind="direct", plan_code="standard", created_at=now)
    )
    return tid


async def signup_traveller(email: str, password: str, deps: IdentityDeps, *, ip: str | None) -> uuid.UUID:
    """A traveller creates their own account (in the airline's direct-sales tenant)."""
    email = normalise_email(email)
    check_password_policy(password, email=email)
    password_hash = await deps.passwords.hash(password)
    now = deps.clock.now()
    async with deps.uow() as uow:
        if await uow.conn.scalar(sa.select(users.c.id).where(users.c.email == email)):
            # Say the same as for a new account would leak existence; conflict is the honest answer
            # for a sign-up form, and sign-ups are rate limited per address.
            raise Conflict("an account with this e-mail exists; log in or reset the password")
        tenant_id = await _direct_tenant(uow.conn, now)
        user_id = await insert_user(
            uow.conn, tenant_id=tenant_id, email=email, role=Role.TRAVELLER, now=now, password_hash=password_hash
        )
        await audit.record(
            uow.conn, action="user.signed_up", at=now, tenant_id=tenant_id, actor_id=user_id, target=email, ip=ip
        )
        await uow.commit()
    return user_id


async def _guard(deps: IdentityDeps, email: str, ip: str) -> None:
    try:
        account = await deps.limiter.peek("login-account", ACCOUNT_FAILURES_PER_MINUTE, email)
        address = await deps.limiter.peek("login-ip", IP_FAILURES_PER_MINUTE, ip)
    except LimiterUnavailable as exc:
        raise Busy("login is temporarily unavailable; retry shortly") from exc
    if not account.allowed or not address.allowed:
        retry = max(account.reset_after, address.reset_after, 1)
        raise TooManyAttempts(
            "too many failed logins; wait before trying again", headers={"Retry-After": str(retry)}, retry_after=retry
        )


async def _count_failure(deps: IdentityDeps, email: str, ip: str) -> None:
    try:
        account = await deps.limiter.hit("login-account", ACCOUNT_FAILURES_PER_MINUTE, email)
        await deps.limiter.hit("login-ip", IP_FAILURES_PER_MINUTE, ip)
    except LimiterUnavailable as exc:
        raise Busy("login is temporarily unavailable; retry shortly") from exc
    # Slow down before locking out: from the third failure in a row each answer waits a little
    # longer, which costs a guesser far more than a person who mistyped.
    failures = ACCOUNT_FAILURES_PER_MINUTE - account.remaining
    await deps.pause(failure_delay(failures))


def failure_delay(failures: int) -> float:
    """Seconds a failed log-in answer waits after ``failures`` failures of one account."""
    return min(FAILURE_DELAY_STEP * max(0, failures - 2), FAILURE_DELAY_MAX)


async def login(email: str, password: str, deps: IdentityDeps, *, ip: str) -> TokenPair:
    """Password grant: an access token and a new refresh-token family."""
    email = normalise_email(email)
    await _guard(deps, email, ip)
    async with deps.uow() as uow:
        row = (await uow.conn.execute(sa.select(users).where(users.c.email == email))).first()
    # Verify even when the account does not exist, so the answer and its timing reveal nothing.
    ok = await deps.passwords.verify(row.password_hash if row is not None else None, password)
    now = deps.clock.now()
    if row is None or not ok or row.status != "active":
        await _count_failure(deps, email, ip)
        async with deps.uow() as uow:
            await audit.record(
                uow.conn,
                action="login.failed",
                at=now,
                tenant_id=row.tenant_id if row else None,
                actor_id=row.id if row else None,
                target=email,
                ip=ip,
            )
            await uow.commit()
        raise InvalidCredentials("the e-mail or password is wrong")
    new_hash = await deps.passwords.hash(password) if deps.passwords.needs_rehash(row.password_hash) else None
    async with deps.uow() as uow:
        if new_hash is not None:
            await uow.conn.execute(sa.update(users).where(users.c.id == row.id).values(password_hash=new_hash))
        refresh = await _new_refresh_token(uow.conn, user_id=row.id, family_id=uuid7(), now=now, ttl=deps.refresh_ttl)
        await audit.record(
            uow.conn, action="login.succeeded", at=now, tenant_id=row.tenant_id, actor_id=row.id, target=email, ip=ip
        )
        await uow.commit()
    access, expires = deps.tokens.issue(subject=row.id, kind="user", session_version=row.session_version, now=now)
    return TokenPair(access, expires, refresh)


async def _new_refresh_token(
    conn: AsyncConnection, *, user_id: uuid.UUID, family_id: uuid.UUID, now: datetime, ttl: timedelta
) -> str:
    credential, _, token_hash = new_secret("rt")
    await conn.execute(
        sa.insert(refresh_tokens).values(
            id=uuid7(), family_id=family_id, user_id=user_id, token_hash=token_hash, issued_at=now, expires_at=now + ttl
        )
    )
    return credential


async def refresh(refresh_token: str, deps: IdentityDeps, *, ip: str | None) -> TokenPair:
    """Rotate: the presented refresh token is spent and a new one issued in the same family.

    Presenting a spent token again means it was stolen (or replayed): the whole family is revoked.
    """
    now = deps.clock.now()
    rt = refresh_tokens.c
    async with deps.uow() as uow:
        row = (
            await uow.conn.execute(
                sa.select(refresh_tokens, users.c.session_version, users.c.status, users.c.tenant_id)
                .join(users, users.c.id == rt.user_id)
                .where(rt.token_hash == digest(refresh_token))
                .with_for_update(of=refresh_tokens)
            )
        ).first()
        if row is None or row.revoked_at is not None or row.expires_at <= now or row.status != "active":
            raise InvalidCredentials("the refresh token is not valid")
        if row.used_at is not None:
            await uow.conn.execute(
                sa.update(refresh_tokens)
                .where(rt.family_id == row.family_id, rt.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            await audit.record(
                uow.conn,
                action="token_family.revoked",
                at=now,
                tenant_id=row.tenant_id,
                actor_id=row.user_id,
                target=str(row.family_id),
                ip=ip,
                reason="refresh_token_reuse",
            )
            await uow.commit()
            raise InvalidCredentials("the refresh token is not valid")
        spent = await uow.conn.execute(
            sa.update(refresh_tokens).where(rt.id == row.id, rt.used_at.is_(None)).values(used_at=now)
        )
        if not spent.rowcount:
            raise InvalidCredentials("the refresh token is not valid")
        new = await _new_refresh_token(
            uow.conn, user_id=row.user_id, family_id=row.family_id, now=now, ttl=deps.refresh_ttl
        )
        await uow.commit()
    access, expires = deps.tokens.issue(subject=row.user_id, kind="user", session_version=row.session_version, now=now)
    return TokenPair(access, expires, new)


async def logout(principal: Principal, deps: IdentityDeps, *, ip: str | None) -> None:
    """End every session of the user: refresh tokens revoked, access tokens dead on their next use."""
    if principal.kind != "user":
        raise Forbidden("API keys do not log out; revoke the key instead")
    now = deps.clock.now()
    async with deps.uow() as uow:
        await _end_sessions(uow.conn, principal.id, now)
        await audit.record(
            uow.conn, action="user.logged_out", at=now, tenant_id=principal.tenant_id, actor_id=principal.id, ip=ip
        )
        await uow.commit()


async def _end_sessions(conn: AsyncConnection, user_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        sa.update(users).where(users.c.id == user_id).values(session_version=users.c.session_version + 1)
    )
    await conn.execute(
        sa.update(refresh_tokens)
        .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def change_password(principal: Principal, current: str, new: str, deps: IdentityDeps, *, ip: str | None) -> None:
    """Change the password; every existing session ends."""
    async with deps.uow() as uow:
        row = (await uow.conn.execute(sa.select(users).where(users.c.id == principal.id))).first()
    if row is None or not await deps.passwords.verify(row.password_hash, current):
        raise InvalidCredentials("the current password is wrong")
    check_password_policy(new, email=row.email)
    new_hash = await deps.passwords.hash(new)
    now = deps.clock.now()
    async with deps.uow() as uow:
        await uow.conn.execute(sa.update(users).where(users.c.id == principal.id).values(password_hash=new_hash))
        await _end_sessions(uow.conn, principal.id, now)
        await audit.record(
            uow.conn, action="password.changed", at=now, tenant_id=principal.tenant_id, actor_id=principal.id, ip=ip
        )
        await uow.commit()


async def create_tenant(
    name: str, plan: str, admin_email: str, principal: Principal, deps: IdentityDeps, *, ip: str | None
) -> tuple[uuid.UUID, uuid.UUID, str]:
    """Operator onboards a travel agency: the tenant and an invitation for its first admin."""
    if principal.role is not Role.PLATFORM_ADMIN:
        raise Forbidden("only platform admins create tenants")
    now = deps.clock.now()
    async with deps.uow() as uow:
        if await uow.conn.scalar(sa.select(plans.c.code).where(plans.c.code == plan)) is None:
            raise InvalidRequest(f"unknown plan {plan!r}")
        if await uow.conn.scalar(sa.select(tenants.c.id).where(tenants.c.name == name)):
            raise Conflict(f"a tenant named {name!r} exists")
        tenant_id = uuid7()
        await uow.conn.execute(
            sa.insert(tenants).values(id=tenant_id, name=name, kind="agency", plan_code=plan, created_at=now)
        )
        user_id, token = await _invite(
            uow.conn, tenant_id=tenant_id, email=admin_email, role=Role.TENANT_ADMIN, now=now
        )
        await audit.record(
            uow.conn, action="tenant.created", at=now, tenant_id=tenant_id, actor_id=principal.id, target=name, ip=ip
        )
        await uow.commit()
    return tenant_id, user_id, token


async def _invite(
    conn: AsyncConnection, *, tenant_id: uuid.UUID, email: str, role: Role, now: datetime
) -> tuple[uuid.UUID, str]:
    email = normalise_email(email)
    if await conn.scalar(sa.select(users.c.id).where(users.c.email == email)):
        raise Conflict("a user with this e-mail exists")
    token, _, token_hash = new_secret("inv")
    user_id = await insert_user(conn, tenant_id=tenant_id, email=email, role=role, now=now, invitation_hash=token_hash)
    return user_id, token


async def invite_user(
    email: str, role: Role, principal: Principal, deps: IdentityDeps, *, ip: str | None
) -> tuple[uuid.UUID, str]:
    """A tenant admin invites a colleague; the invitation token is shown once."""
    if role not in roles_grantable_by(principal.role):
        raise Forbidden(f"a {principal.role} cannot grant the role {role}")
    now = deps.clock.now()
    async with deps.uow() as uow:
        user_id, token = await _invite(uow.conn, tenant_id=principal.tenant_id, email=email, role=role, now=now)
        await audit.record(
            uow.conn,
            action="user.invited",
            at=now,
            tenant_id=principal.tenant_id,
            actor_id=principal.id,
            target=normalise_email(email),
            ip=ip,
            role=str(role),
        )
        await uow.commit()
    return user_id, token


async def accept_invitation(token: str, password: str, deps: IdentityDeps, *, ip: str | None) -> uuid.UUID:
    """The invited user sets a password and the account becomes active."""
    now = deps.clock.now()
    async with deps.uow() as uow:
        row = (await uow.conn.execute(sa.select(users).where(users.c.invitation_hash == digest(token)))).first()
    if row is None or row.status != "invited" or row.invitation_expires_at is None or row.invitation_expires_at <= now:
        raise InvalidCredentials("the invitation is not valid")
    check_password_policy(password, email=row.email)
    password_hash = await deps.passwords.hash(password)
    async with deps.uow() as uow:
        done = await uow.conn.execute(
            sa.update(users)
            .where(users.c.id == row.id, users.c.status == "invited")
            .values(password_hash=password_hash, status="active", invitation_hash=None, invitation_expires_at=None)
        )
        if not done.rowcount:
            raise InvalidCredentials("the invitation is not valid")
        await audit.record(
            uow.conn,
            action="invitation.accepted",
            at=now,
            tenant_id=row.tenant_id,
            actor_id=row.id,
            target=row.email,
            ip=ip,
        )
        await uow.commit()
    return uuid.UUID(str(row.id))


async def change_role(
    user_id: uuid.UUID, role: Role, principal: Principal, deps: IdentityDeps, *, ip: str | None
) -> None:
    """Change a colleague's role (tenant admins within their tenant, platform admins anywhere)."""
    if role not in roles_grantable_by(principal.role):
        raise Forbidden(f"a {principal.role} cannot grant the role {role}")
    if user_id == principal.id:
        raise Forbidden("you cannot change your own role")
    now = deps.clock.now()
    async with deps.uow() as uow:
        where = [users.c.id == user_id]
        if principal.tenant_filter is not None:
            where.append(users.c.tenant_id == principal.tenant_filter)
        row = (await uow.conn.execute(sa.select(users.c.role, users.c.tenant_id).where(*where))).first()
        if row is None:
            raise NotFound(f"user {user_id} does not exist")
        if Role(row.role) not in roles_grantable_by(principal.role):
            raise Forbidden(f"a {principal.role} cannot change the role of a {row.role}")
        await uow.conn.execute(
            sa.update(users).where(users.c.id == user_id).values(role=role, session_version=users.c.session_version + 1)
        )
        await audit.record(
            uow.conn,
            action="role.changed",
            at=now,
            tenant_id=row.tenant_id,
            actor_id=principal.id,
            target=str(user_id),
            ip=ip,
            old_role=row.role,
            new_role=str(role),
        )
        await uow.commit()


async def create_api_key(
    name: str, scopes: frozenset[str], principal: Principal, deps: IdentityDeps, *, ip: str | None
) -> tuple[uuid.UUID, str, str]:
    """A tenant admin creates an API key; the secret is shown once and stored only as a hash."""
    if principal.role is not Role.TENANT_ADMIN or principal.kind != "user":
        raise Forbidden("only tenant admins create API keys")
    unknown = scopes - ALL_SCOPES
    if unknown or not scopes:
        raise InvalidRequest(f"scopes must be a non-empty subset of {sorted(ALL_SCOPES)}")
    now = deps.clock.now()
    credential, prefix, secret_hash = new_secret("sbk")
    key_id = uuid7()
    async with deps.uow() as uow:
        await uow.conn.execute(
            sa.insert(api_keys).values(
                id=key_id,
                tenant_id=principal.tenant_id,
                name=name,
                prefix=prefix,
                secret_hash=secret_hash,
                scopes=sorted(scopes),
                created_by=principal.id,
                created_at=now,
            )
        )
        await audit.record(
            uow.conn,
            action="api_key.created",
            at=now,
            tenant_id=principal.tenant_id,
            actor_id=principal.id,
            target=f"sbk_{prefix}",
            ip=ip,
            scopes=sorted(scopes),
        )
        await uow.commit()
    return key_id, credential, f"sbk_{prefix}"


async def revoke_api_key(key_id: uuid.UUID, principal: Principal, deps: IdentityDeps, *, ip: str | None) -> None:
    """Revoke a key at once; requests with it fail from the next one (within a second everywhere)."""
    if principal.role not in {Role.TENANT_ADMIN, Role.PLATFORM_ADMIN} or principal.kind != "user":
        raise Forbidden("only admins revoke API keys")
    now = deps.clock.now()
    async with deps.uow() as uow:
        where = [api_keys.c.id == key_id]
        if principal.tenant_filter is not None:
            where.append(api_keys.c.tenant_id == principal.tenant_filter)
        row = (await uow.conn.execute(sa.select(api_keys.c.prefix, api_keys.c.tenant_id).where(*where))).first()
        if row is None:
            raise NotFound(f"API key {key_id} does not exist")
        await uow.conn.execute(
            sa.update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
        )
        await audit.record(
            uow.conn,
            action="api_key.revoked",
            at=now,
            tenant_id=row.tenant_id,
            actor_id=principal.id,
            target=f"sbk_{row.prefix}",
            ip=ip,
        )
        await uow.commit()


async def client_credentials(client_id: str, client_secret: str, deps: IdentityDeps, *, ip: str) -> TokenPair:
    """OAuth2 client-credentials grant: an API key (``client_id`` + ``_`` + ``client_secret``) for a token."""
    credential = f"{client_id}_{client_secret}"
    await _guard(deps, client_id, ip)
    async with deps.uow() as uow:
        subject = await api_key_subject(uow.conn, credential, deps.clock.now())
    if subject is None:
        await _count_failure(deps, client_id, ip)
        raise InvalidCredentials("the client credentials are wrong")
    access, expires = deps.tokens.issue(subject=subject, kind="api_key", session_version=0, now=deps.clock.now())
    return TokenPair(access, expires, None)


async def touch_api_key(conn: AsyncConnection, key_id: uuid.UUID, now: datetime) -> None:
    """Record when a key was last used (at most once a minute per key, to keep writes rare)."""
    await conn.execute(
        sa.update(api_keys)
        .where(
            api_keys.c.id == key_id,
            sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now - timedelta(minutes=1)),
        )
        .values(last_used_at=now)
    )

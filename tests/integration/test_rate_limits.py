"""Rate limits: exactly N then 429 with headers, per principal and per tenant, shared through Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from skybook.bootstrap import Container
from skybook.identity.tables import plans, tenants
from skybook.identity.tokens import KeyRing, TokenService
from skybook.platform.db import insert_ignoring_conflicts
from skybook.platform.ratelimit import RateLimiter
from tests.conftest import IN_CI, PASSWORD, Identities, Party, serving

Clients = Callable[[Party | None], httpx.AsyncClient]
REDIS_URL = os.environ.get("SKYBOOK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


async def _put_on_plan(container: Container, tenant_id: uuid.UUID, *, per_principal: int, per_tenant: int) -> None:
    code = f"t{per_principal}-{per_tenant}"
    async with container.engine.begin() as conn:
        await conn.execute(
            insert_ignoring_conflicts(conn, plans).values(
                code=code,
                name=code,
                requests_per_minute=per_principal,
                tenant_requests_per_minute=per_tenant,
                max_unpaid_seats=9,
            )
        )
        await conn.execute(sa.update(tenants).where(tenants.c.id == tenant_id).values(plan_code=code))
    container.authenticator.forget()


async def test_a_limit_of_n_gives_exactly_n_successes_then_429_with_headers(
    clients: Clients, identities: Identities, container: Container
) -> None:
    await _put_on_plan(container, identities.a_agent.tenant_id, per_principal=7, per_tenant=100)
    agent = clients(identities.a_agent)
    answers = [await agent.get("/v1/me") for _ in range(9)]
    assert [r.status_code for r in answers] == [200] * 7 + [429] * 2
    last_ok, refused = answers[6], answers[7]
    assert last_ok.headers["ratelimit-limit"] == "7"
    assert last_ok.headers["ratelimit-remaining"] == "0"
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert int(refused.headers["ratelimit-reset"]) <= 60
    # Another tenant is not slowed down at all.
    other = await clients(identities.b_agent).get("/v1/me")
    assert other.status_code == 200
    assert int(other.headers["ratelimit-remaining"]) > 100


async def test_the_tenant_limit_binds_all_principals_of_the_tenant_together(
    clients: Clients, identities: Identities, container: Container
) -> None:
    await _put_on_plan(container, identities.a_agent.tenant_id, per_principal=5, per_tenant=8)
    agent, admin = clients(identities.a_agent), clients(identities.a_admin)
    codes = [(await agent.get("/v1/me")).status_code for _ in range(5)]
    codes += [(await admin.get("/v1/me")).status_code for _ in range(5)]
    assert codes == [200] * 5 + [200] * 3 + [429] * 2


async def test_anonymous_routes_are_limited_per_address(clients: Clients, container: Container) -> None:
    limit = container.settings.anonymous_rate_limit
    anon = clients(None)
    codes = [
        (
            await anon.post(
                "/v1/auth/invitations/accept",
                json={"token": f"inv_{i:012d}_nope", "password": "a password long enough"},
            )
        ).status_code
        for i in range(limit + 1)
    ]
    assert codes == [401] * limit + [429]


async def test_when_the_limiter_store_is_down_the_api_stays_up_but_login_refuses(
    clients: Clients, identities: Identities, container: Container
) -> None:
    container.limiter = RateLimiter("async+redis://127.0.0.1:1/0")  # nothing listens there
    assert (await clients(identities.a_agent).get("/v1/me")).status_code == 200
    login = await clients(None).post(
        "/v1/auth/token", data={"grant_type": "password", "username": identities.a_agent.email, "password": PASSWORD}
    )
    assert login.status_code == 503
    assert login.json()["code"] == "busy"


def _redis_available() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            return
    except OSError as err:
        if IN_CI:
            pytest.fail(f"Redis is not reachable ({err}); CI=true, so this test must not skip")
        pytest.skip(f"Redis is not reachable ({err}); start it to run this test")


def test_two_api_processes_share_one_limit_through_redis(tmp_path: Path) -> None:
    _redis_available()
    skybook = str(Path(sys.executable).with_name("skybook"))  # for the migration
    secret = "rate-limit-test-secret-0123456789"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYBOOK_")}
    env.update(
        {
            "SKYBOOK_DATA_DIR": str(tmp_path),
            "SKYBOOK_REDIS_URL": REDIS_URL,
            "SKYBOOK_SECRET_KEY": secret,
            "SKYBOOK_RUN_WORKERS": "false",
        }
    )
    subprocess.run([skybook, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    db = f"sqlite:///{tmp_path / 'skybook.db'}"
    engine = sa.create_engine(db)
    tenant_id, user_id = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            plans.insert().values(
                code="tiny", name="tiny", requests_per_minute=10, tenant_requests_per_minute=100, max_unpaid_seats=9
            )
        )
        conn.execute(tenants.insert().values(id=tenant_id, name="T", kind="agency", plan_code="tiny", created_at=now))
        conn.execute(
            sa.text(
                "INSERT INTO users (id, tenant_id, email, role, status, session_version, created_at) "
                "VALUES (:id, :tenant, 'rl@example.com', 'agent', 'active', 1, :now)"
            ),
            {"id": user_id.hex, "tenant": tenant_id.hex, "now": now.replace(tzinfo=None)},
        )
    engine.dispose()
    tokens = TokenService(
        KeyRing.from_settings("", secret),
        issuer="skybook",
        audience="skybook-api",
        ttl=__import__("datetime").timedelta(minutes=15),
    )
    token, _ = tokens.issue(subject=user_id, kind="user", session_version=1, now=now)

    with serving(env, 2) as ports, httpx.Client(timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        codes = [client.get(f"http://127.0.0.1:{ports[i % 2]}/v1/me").status_code for i in range(14)]
    assert codes == [200] * 10 + [429] * 4, codes


async def test_on_redis_both_limits_are_counted_in_one_call_on_the_library_s_counters() -> None:
    _redis_available()
    limiter = RateLimiter("async+" + REDIS_URL)
    one, two, tenant = (str(uuid.uuid4()) for _ in range(3))

    async def hit(principal: str) -> list[tuple[bool, int]]:
        results = await limiter.hit_all((("principal", 3, principal), ("tenant", 5, tenant)))
        return [(r.allowed, r.remaining) for r in results]

    assert await hit(one) == [(True, 2), (True, 4)]
    assert await hit(one) == [(True, 1), (True, 3)]
    assert await hit(one) == [(True, 0), (True, 2)]
    assert await hit(one) == [(False, 0)]  # the principal's own limit refuses; the tenant is not counted
    assert await hit(two) == [(True, 2), (True, 1)]
    assert await hit(two) == [(True, 1), (True, 0)]
    refused = await limiter.hit_all((("principal", 3, two), ("tenant", 5, tenant)))
    assert [r.allowed for r in refused] == [True, False]  # the tenant's limit binds both principals
    assert 1 <= refused[-1].reset_after <= 60
    # The same counters as the library's own calls (peek, clear, processes on the per-limit path).
    assert (await limiter.peek("tenant", 5, tenant)).remaining == 0
    assert (await limiter.hit("principal", 3, two)).allowed is False

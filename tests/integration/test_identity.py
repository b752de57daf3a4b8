"""Accounts, log-in, sessions, invitations, roles and API keys, as users of the identity API see them."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from skybook.app import create_app
from skybook.bootstrap import Container, bootstrap
from skybook.identity import Passwords
from skybook.identity.tables import audit_log, tenants, users
from skybook.identity.tokens import KeyRing, TokenService
from skybook.platform.clock import FakeClock
from tests.conftest import PASSWORD, Identities, Network, Party, serving

Clients = Callable[[Party | None], httpx.AsyncClient]


async def _login(anon: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await anon.post("/v1/auth/token", data={"grant_type": "password", "username": email, "password": password})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_traveller_signs_up_logs_in_and_sees_who_they_are(clients: Clients) -> None:
    anon = clients(None)
    r = await anon.post("/v1/auth/signup", json={"email": "Grace@Example.com", "password": "a long enough secret"})
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "traveller"
    login = await _login(anon, "grace@example.com", "a long enough secret")
    assert login.status_code == 200
    body = login.json()
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 900
    assert body["refresh_token"].startswith("rt_")
    assert login.headers["cache-control"] == "no-store"
    me = (await anon.get("/v1/me", headers=_bearer(body["access_token"]))).json()
    assert (me["email"], me["role"], me["kind"]) == ("grace@example.com", "traveller", "user")


async def test_sign_up_refuses_short_passwords_and_taken_emails(clients: Clients, identities: Identities) -> None:
    anon = clients(None)
    short = await anon.post("/v1/auth/signup", json={"email": "x@example.com", "password": "short"})
    assert short.status_code == 422
    taken = await anon.post(
        "/v1/auth/signup", json={"email": identities.traveller.email, "password": "long enough pw!"}
    )
    assert taken.status_code == 409


async def test_a_wrong_password_and_an_unknown_account_get_the_same_answer(
    clients: Clients, identities: Identities
) -> None:
    anon = clients(None)
    wrong = await _login(anon, identities.a_agent.email, "not the password at all")
    unknown = await _login(anon, "nobody@example.com", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == "invalid_credentials"


async def test_repeated_failures_slow_down_then_lock_the_account_without_touching_others(
    clients: Clients, identities: Identities, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(container, "pause", record)
    anon = clients(None)
    for _ in range(5):
        assert (await _login(anon, identities.a_agent.email, "guess guess guess")).status_code == 401
    assert waits == [0.0, 0.0, 0.25, 0.5, 0.75]  # each failure after the second answers later
    locked = await _login(anon, identities.a_agent.email)  # even the right password waits now
    assert locked.status_code == 429
    assert locked.json()["code"] == "too_many_attempts"
    assert int(locked.headers["retry-after"]) >= 1
    assert (await _login(anon, identities.b_agent.email)).status_code == 200


async def test_refresh_tokens_rotate_and_each_works_once(clients: Clients, identities: Identities) -> None:
    anon = clients(None)
    first = (await _login(anon, identities.a_agent.email)).json()
    second = await anon.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    third = await anon.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": second.json()["refresh_token"]}
    )
    assert third.status_code == 200


async def test_logout_ends_every_session(clients: Clients, identities: Identities, container: Container) -> None:
    anon = clients(None)
    tokens = (await _login(anon, identities.a_agent.email)).json()
    headers = _bearer(tokens["access_token"])
    assert (await anon.get("/v1/me", headers=headers)).status_code == 200
    assert (await anon.post("/v1/auth/logout", headers=headers)).status_code == 204
    container.authenticator.forget()  # what one second does across every API process
    assert (await anon.get("/v1/me", headers=headers)).status_code == 401
    again = await anon.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert again.status_code == 401


async def test_changing_the_password_ends_sessions_and_the_new_one_works(
    clients: Clients, identities: Identities, container: Container
) -> None:
    anon = clients(None)
    tokens = (await _login(anon, identities.traveller.email)).json()
    headers = _bearer(tokens["access_token"])
    r = await anon.post(
        "/v1/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": "an entirely new secret"},
    )
    assert r.status_code == 204
    container.authenticator.forget()
    assert (await anon.get("/v1/me", headers=headers)).status_code == 401
    assert (await _login(anon, identities.traveller.email)).status_code == 401
    assert (await _login(anon, identities.traveller.email, "an entirely new secret")).status_code == 200


async def test_hashes_are_upgraded_on_login_when_the_parameters_rise(
    clients: Clients, identities: Identities, container: Container
) -> None:
    container.passwords = Passwords(memory_kib=32 * 1024, time_cost=3)
    assert (await _login(clients(None), identities.a_agent.email)).status_code == 200
    async with container.engine.connect() as conn:
        stored = await conn.scalar(sa.select(users.c.password_hash).where(users.c.id == identities.a_agent.id))
    assert "$argon2id$" in stored
    assert "m=32768,t=3" in stored


async def test_a_tenant_admin_invites_an_agent_who_activates_the_account(
    clients: Clients, identities: Identities
) -> None:
    admin = clients(identities.a_admin)
    invite = await admin.post("/v1/users", json={"email": "new.agent@agency-a.example.com", "role": "agent"})
    assert invite.status_code == 201
    token = invite.json()["invitation_token"]
    anon = clients(None)
    assert (await _login(anon, "new.agent@agency-a.example.com", "whatever password")).status_code == 401
    accepted = await anon.post("/v1/auth/invitations/accept", json={"token": token, "password": "my own long secret"})
    assert accepted.status_code == 204
    assert (
        await anon.post("/v1/auth/invitations/accept", json={"token": token, "password": "my own long secret"})
    ).status_code == 401
    assert (await _login(anon, "new.agent@agency-a.example.com", "my own long secret")).status_code == 200
    listed = (await admin.get("/v1/users")).json()
    assert {u["email"] for u in listed["items"]} == {
        identities.a_admin.email,
        identities.a_agent.email,
        "new.agent@agency-a.example.com",
    }


async def test_nobody_grants_more_than_they_have(clients: Clients, identities: Identities) -> None:
    admin = clients(identities.a_admin)
    up = await admin.post("/v1/users", json={"email": "boss@agency-a.example.com", "role": "platform_admin"})
    assert up.status_code == 403
    agent = clients(identities.a_agent)
    assert (await agent.post("/v1/users", json={"email": "x@agency-a.example.com", "role": "agent"})).status_code == 403
    own = await admin.patch(f"/v1/users/{identities.a_admin.id}", json={"role": "agent"})
    assert own.status_code == 403


async def test_role_changes_apply_at_once_and_are_audited_for_the_tenant_only(
    clients: Clients, identities: Identities, container: Container
) -> None:
    admin = clients(identities.a_admin)
    r = await admin.patch(f"/v1/users/{identities.a_agent.id}", json={"role": "tenant_admin"})
    assert r.status_code == 200
    assert r.json()["role"] == "tenant_admin"
    events = (await admin.get("/v1/audit-events")).json()["items"]
    change = next(e for e in events if e["action"] == "role.changed")
    assert change["details"] == {"old_role": "agent", "new_role": "tenant_admin"}
    assert change["actor_id"] == str(identities.a_admin.id)
    other = (await clients(identities.b_admin).get("/v1/audit-events")).json()["items"]
    assert all(e["tenant_id"] == str(identities.b_admin.tenant_id) for e in other)
    async with container.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(audit_log)) >= 1


async def test_api_keys_are_shown_once_scoped_and_revocable(
    clients: Clients, identities: Identities, container: Container, network: Network
) -> None:
    admin = clients(identities.a_admin)
    created = await admin.post("/v1/api-keys", json={"name": "engine", "scopes": ["search"]})
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith(key["prefix"] + "_")
    listed = (await admin.get("/v1/api-keys")).json()["items"]
    assert all("key" not in k for k in listed)
    machine = clients(None)
    flight = await network.flight()
    day = flight["departure_date"]
    search = await machine.get(
        "/v1/offers",
        params={"origin": "CPH", "destination": "LHR", "departure_date": day},
        headers={"X-API-Key": key["key"]},
    )
    assert search.status_code == 200
    # The key has no booking scope.
    hold = await machine.post(
        "/v1/holds",
        headers=_bearer(key["key"]),
        json={"segments": [{"flight_id": flight["id"], "booking_class": "M"}], "passengers": {"adults": 1}},
    )
    assert hold.status_code == 403
    used = next(k for k in (await admin.get("/v1/api-keys")).json()["items"] if k["id"] == key["id"])
    assert used["last_used_at"] is not None
    assert (await admin.post(f"/v1/api-keys/{key['id']}/revoke")).json()["revoked_at"] is not None
    container.authenticator.forget()
    assert (await machine.get("/v1/me", headers={"X-API-Key": key["key"]})).status_code == 401


async def test_client_credentials_trade_an_api_key_for_an_access_token(
    clients: Clients, identities: Identities
) -> None:
    assert identities.a_key.api_key is not None
    scheme, ident, client_secret = identities.a_key.api_key.split("_", 2)
    client_id = f"{scheme}_{ident}"
    anon = clients(None)
    r = await anon.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret},
    )
    assert r.status_code == 200
    assert r.json()["refresh_token"] is None
    me = (await anon.get("/v1/me", headers=_bearer(r.json()["access_token"]))).json()
    assert (me["kind"], me["tenant_id"]) == ("api_key", str(identities.a_key.tenant_id))
    bad = await anon.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret[::-1]},
    )
    assert bad.status_code == 401


@pytest.mark.parametrize("plan", ["free"])
async def test_one_principal_cannot_hoard_unpaid_seats(
    plan: str, clients: Clients, identities: Identities, network: Network, container: Container
) -> None:
    from skybook.identity.tables import tenants

    async with container.engine.begin() as conn:
        await conn.execute(
            sa.update(tenants).where(tenants.c.id == identities.a_agent.tenant_id).values(plan_code=plan)
        )
    container.authenticator.forget()
    flight = await network.flight()
    assert (await network.hold(flight["id"], "Y", adults=9)).status_code == 201  # the free plan's cap is 9
    more = await network.hold(flight["id"], "Y", adults=1)
    assert more.status_code == 429
    assert more.json()["code"] == "hold_limit_reached"
    # Another principal of the same tenant has a cap of its own.
    assert (
        await clients(identities.a_admin).post(
            "/v1/holds",
            json={"segments": [{"flight_id": flight["id"], "booking_class": "Y"}], "passengers": {"adults": 1}},
        )
    ).status_code == 201


@pytest.mark.parametrize("database", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_the_audit_log_cannot_be_rewritten_on_postgres(
    clients: Clients, identities: Identities, container: Container
) -> None:
    await _login(clients(None), identities.a_agent.email, "wrong wrong wrong")
    # PostgreSQL enforces it with a trigger; SQLite deployments are single-process and the app never
    # updates or deletes audit rows.
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        async with container.engine.begin() as conn:
            await conn.execute(sa.update(audit_log).values(action="nothing.happened"))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        async with container.engine.begin() as conn:
            await conn.execute(sa.delete(audit_log))


async def test_another_api_process_refuses_a_logged_out_token_a_revoked_key_and_sees_a_new_plan(
    clients: Clients, identities: Identities, container: Container, clock: FakeClock
) -> None:
    """No cache clearing here: a second app with its own engine and caches is another API process.

    Every change goes through the database (the API, or plain SQL for the plan), and the other
    process must see it within the one-second bound; the loop gives it 1.5 s and asserts the outcome.
    """
    other = bootstrap(container.settings, clock=clock)
    transport = httpx.ASGITransport(app=create_app(other), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://other") as remote:
        anon = clients(None)
        tokens = (await _login(anon, identities.a_agent.email)).json()
        user, key = _bearer(tokens["access_token"]), {"X-API-Key": str(identities.a_key.api_key)}
        for headers in (user, key):
            assert (await remote.get("/v1/me", headers=headers)).status_code == 200  # now cached there

        assert (await anon.post("/v1/auth/logout", headers=user)).status_code == 204
        assert (await _until(remote, user, lambda r: r.status_code == 401)).status_code == 401

        admin = clients(identities.a_admin)
        assert (await admin.post(f"/v1/api-keys/{identities.a_key.id}/revoke")).status_code == 200
        assert (await _until(remote, key, lambda r: r.status_code == 401)).status_code == 401

        b_agent = {"Authorization": f"Bearer {identities.b_agent.token}"}
        before = await remote.get("/v1/me", headers=b_agent)
        async with container.engine.begin() as conn:  # an operator's SQL, not the API: the trigger signals it
            await conn.execute(
                sa.update(tenants).where(tenants.c.id == identities.b_agent.tenant_id).values(plan_code="free")
            )
        free = await _until(
            remote, b_agent, lambda r: r.headers["ratelimit-limit"] != before.headers["ratelimit-limit"]
        )
        assert free.json()["plan"] == "free"
    await other.engine.dispose()


async def _until(
    client: httpx.AsyncClient, headers: dict[str, str], done: Callable[[httpx.Response], bool]
) -> httpx.Response:
    """GET /v1/me until ``done`` or 1.5 s (the bound is one second); the caller asserts the outcome."""
    r = await client.get("/v1/me", headers=headers)
    for _ in range(15):
        if done(r):
            break
        await asyncio.sleep(0.1)
        r = await client.get("/v1/me", headers=headers)
    return r


def test_logout_on_one_api_process_is_refused_by_another_process(tmp_path: Path) -> None:
    """Two real ``skybook serve`` processes on one database: the change signal crosses processes."""
    skybook = str(Path(sys.executable).with_name("skybook"))  # for the migration
    secret = secrets.token_urlsafe(32)  # made up per run; shared by the two processes
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYBOOK_")}
    env.update({"SKYBOOK_DATA_DIR": str(tmp_path), "SKYBOOK_SECRET_KEY": secret, "SKYBOOK_RUN_WORKERS": "false"})
    subprocess.run([skybook, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'skybook.db'}")
    tenant_id, user_id, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            tenants.insert().values(id=tenant_id, name="T", kind="agency", plan_code="standard", created_at=now)
        )
        conn.execute(
            sa.text(
                "INSERT INTO users (id, tenant_id, email, role, status, session_version, created_at) "
                "VALUES (:id, :tenant, 'two@example.com', 'agent', 'active', 1, :now)"
            ),
            {"id": user_id.hex, "tenant": tenant_id.hex, "now": now.replace(tzinfo=None)},
        )
    engine.dispose()
    tokens = TokenService(
        KeyRing.from_settings("", secret), issuer="skybook", audience="skybook-api", ttl=timedelta(minutes=15)
    )
    token, _ = tokens.issue(subject=user_id, kind="user", session_version=1, now=now)
    with serving(env, 2) as ports, httpx.Client(timeout=10, headers=_bearer(token)) as client:
        a, b = (f"http://127.0.0.1:{p}/v1" for p in ports)
        assert [client.get(f"{url}/me").status_code for url in (a, b)] == [200, 200]  # cached in both
        assert client.post(f"{a}/auth/logout").status_code == 204
        codes = [client.get(f"{b}/me").status_code]
        for _ in range(15):  # 1.5 s for a one-second bound; the outcome is asserted, not the time
            if codes[-1] == 401:
                break
            time.sleep(0.1)
            codes.append(client.get(f"{b}/me").status_code)
    assert codes[-1] == 401, codes

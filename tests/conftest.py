"""Shared fixtures: a real database per backend (SQLite file, PostgreSQL), a wired app, a test network.

PostgreSQL tests skip with a clear message when the server is unreachable on a developer's
machine, and fail when ``CI=true`` so they can never silently skip in CI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from skybook.app import create_app
from skybook.bootstrap import Container, bootstrap
from skybook.identity.tables import api_keys, tenants, users
from skybook.identity.tokens import new_secret
from skybook.payments import SandboxPaymentProvider
from skybook.platform.clock import FakeClock
from skybook.platform.migrate import upgrade
from skybook.schema import metadata
from skybook.settings import Settings
from tests.invariants import check_seat_invariants
from tests.loopback import Receiver, listening

PG_ADMIN_URL = os.environ.get("SKYBOOK_TEST_POSTGRES_ADMIN_URL", "postgresql://root@127.0.0.1:5432/root")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(what: str, err: BaseException) -> None:
    msg = f"{what} is not reachable ({type(err).__name__}: {err})"
    if IN_CI:
        pytest.fail(f"{msg}; CI=true, so this test must not skip")
    pytest.skip(f"{msg}; start it to run this test")


@dataclass
class Database:
    """A migrated test database."""

    backend: str
    url: str


def _create_pg_database() -> str:
    import asyncio

    import asyncpg

    name = f"skybook_test_{os.getpid()}"

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
    admin = sa.engine.make_url(PG_ADMIN_URL)
    return str(admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False))


def _drop_pg_database(url: str) -> None:
    import asyncio

    import asyncpg

    name = sa.engine.make_url(url).database

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> Database:
    path = tmp_path_factory.mktemp("sqlite") / "skybook.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return Database("sqlite", url)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Database]:
    try:
        url = _create_pg_database()
    except (OSError, Exception) as err:
        _unavailable("PostgreSQL", err)
        raise
    upgrade(url)
    yield Database("postgres", url)
    _drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Database:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_database" if request.param == "sqlite" else "postgres_database"
    db: Database = request.getfixturevalue(fixture)
    return db


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def payments() -> SandboxPaymentProvider:
    return SandboxPaymentProvider()


@pytest.fixture
async def container(
    database: Database, clock: FakeClock, payments: SandboxPaymentProvider, tmp_path: Path
) -> AsyncIterator[Container]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        secret_key="test-only-secret-key-0123456789",
        database_url=database.url,
        data_dir=tmp_path,
        # The test process is the embedded deployment: it runs the event consumers. The app's
        # lifespan (and so the dispatcher loop) does not run under httpx, so a request that waits
        # for a consumer's effect (payment -> tickets) delivers the pending events itself.
        run_workers=True,
        database_pool_size=20,
        # Webhook tests deliver to a receiver on 127.0.0.1; tests of the refusal switch it off.
        allow_loopback_webhooks=True,
    )
    c = bootstrap(settings, clock=clock, payments=payments)
    await _truncate(c)
    yield c
    # After every test, however it went: no flight is oversold and every count matches its orders.
    problems = await check_seat_invariants(c.engine)
    await c.close()
    assert not problems, problems


# Reference data written by migrations, kept between tests.
REFERENCE_TABLES = frozenset({"plans", "identity_version"})
# Append-only for rows (a trigger refuses UPDATE and DELETE); only TRUNCATE empties it.
APPEND_ONLY_TABLES = frozenset({"audit_log"})


async def _truncate(c: Container) -> None:
    """Empty every table but the reference data and restart the identity sequences.

    On PostgreSQL, ``DELETE`` from the few small tables a test fills costs milliseconds where one
    ``TRUNCATE`` of all of them costs about half a second (new files for every table and index);
    the result is the same, including ``RESTART IDENTITY`` (the sequences the tables own are reset).
    Unlike after a TRUNCATE, new rows may reuse the space of deleted ones: a test that needs rows in
    the order they were written must ask for it (``ORDER BY``), as the application does.
    """
    tables = [t for t in reversed(metadata.sorted_tables) if t.name not in REFERENCE_TABLES]
    async with c.engine.begin() as conn:
        for table in tables:
            if table.name in APPEND_ONLY_TABLES and conn.dialect.name == "postgresql":
                if (await conn.execute(sa.select(sa.exists().select_from(table)))).scalar():
                    await conn.execute(sa.text(f'TRUNCATE "{table.name}"'))
            else:
                await conn.execute(table.delete())
        if conn.dialect.name == "postgresql":
            await conn.execute(
                sa.text(
                    "SELECT setval(s.oid::regclass, 1, false) FROM pg_class s"
                    " JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')"
                    " JOIN pg_class t ON t.oid = d.refobjid"
                    " WHERE s.relkind = 'S' AND t.relname = ANY(:names)"
                ),
                {"names": [t.name for t in tables]},
            )


PASSWORD = "correct horse battery staple"
_password_hash: list[str] = []


def password_hash() -> str:
    """One argon2id hash of PASSWORD for the whole session (hashing is slow on purpose)."""
    if not _password_hash:
        from argon2 import PasswordHasher

        _password_hash.append(PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1).hash(PASSWORD))
    return _password_hash[0]


@dataclass
class Party:
    """A test principal with a ready access token."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    role: str
    email: str
    token: str
    api_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Identities:
    """Operator staff, two agency tenants and two travellers, as the BOLA tests need them."""

    admin: Party
    staff: Party
    a_admin: Party
    a_agent: Party
    a_key: Party
    b_admin: Party
    b_agent: Party
    b_key: Party
    traveller: Party
    other_traveller: Party


async def _tenant(conn: Any, name: str, kind: str, plan: str, now: datetime) -> uuid.UUID:
    tid = uuid.uuid4()
    await conn.execute(tenants.insert().values(id=tid, name=name, kind=kind, plan_code=plan, created_at=now))
    return tid


async def _user(conn: Any, c: Container, tenant_id: uuid.UUID, role: str, email: str, now: datetime) -> Party:
    uid = uuid.uuid4()
    await conn.execute(
        users.insert().values(
            id=uid,
            tenant_id=tenant_id,
            email=email,
            password_hash=password_hash(),
            role=role,
            status="active",
            session_version=1,
            created_at=now,
        )
    )
    token, _ = c.tokens.issue(subject=uid, kind="user", session_version=1, now=now)
    return Party(uid, tenant_id, role, email, token)


async def _key(conn: Any, c: Container, tenant_id: uuid.UUID, creator: uuid.UUID, now: datetime) -> Party:
    credential, prefix, secret_hash = new_secret("sbk")
    kid = uuid.uuid4()
    await conn.execute(
        api_keys.insert().values(
            id=kid,
            tenant_id=tenant_id,
            name="test key",
            prefix=prefix,
            secret_hash=secret_hash,
            scopes=["bookings:read", "bookings:write", "search"],
            created_by=creator,
            created_at=now,
        )
    )
    return Party(kid, tenant_id, "agent", "", credential, api_key=credential)


@pytest.fixture
async def identities(container: Container, clock: FakeClock) -> Identities:
    now = clock.now()
    async with container.engine.begin() as conn:
        operator = await _tenant(conn, "Skybook Air", "operator", "operator", now)
        agency_a = await _tenant(conn, "Agency A", "agency", "enterprise", now)
        agency_b = await _tenant(conn, "Agency B", "agency", "enterprise", now)
        direct = await _tenant(conn, "Direct sales", "direct", "standard", now)
        admin = await _user(conn, container, operator, "platform_admin", "admin@skybook.example.com", now)
        staff = await _user(conn, container, operator, "airline_staff", "staff@skybook.example.com", now)
        a_admin = await _user(conn, container, agency_a, "tenant_admin", "admin@agency-a.example.com", now)
        a_agent = await _user(conn, container, agency_a, "agent", "agent@agency-a.example.com", now)
        b_admin = await _user(conn, container, agency_b, "tenant_admin", "admin@agency-b.example.com", now)
        b_agent = await _user(conn, container, agency_b, "agent", "agent@agency-b.example.com", now)
        traveller = await _user(conn, container, direct, "traveller", "ada@example.com", now)
        other = await _user(conn, container, direct, "traveller", "bob@example.com", now)
        a_key = await _key(conn, container, agency_a, a_admin.id, now)
        b_key = await _key(conn, container, agency_b, b_admin.id, now)
    return Identities(admin, staff, a_admin, a_agent, a_key, b_admin, b_agent, b_key, traveller, other)


@pytest.fixture
def app(container: Container) -> Any:
    return create_app(container)


class _FreshToken(httpx.Auth):
    """Mints an access token per request from the test clock, so tests may move time freely."""

    def __init__(self, container: Container, party: Party) -> None:
        self.container = container
        self.party = party

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        token, _ = self.container.tokens.issue(
            subject=self.party.id, kind="user", session_version=1, now=self.container.clock.now()
        )
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


@pytest.fixture
async def clients(app: Any, container: Container) -> AsyncIterator[Callable[[Party | None], httpx.AsyncClient]]:
    """A factory of HTTP clients speaking to the in-process app as a given principal (or nobody)."""
    opened: list[httpx.AsyncClient] = []
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def make(party: Party | None) -> httpx.AsyncClient:
        auth = _FreshToken(container, party) if party is not None and party.api_key is None else None
        headers = party.headers if party is not None and party.api_key is not None else None
        c = httpx.AsyncClient(transport=transport, base_url="http://testserver", auth=auth, headers=headers)
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.aclose()


@pytest.fixture
def client(clients: Callable[[Party | None], httpx.AsyncClient], identities: Identities) -> httpx.AsyncClient:
    """An agent of agency A: the everyday caller of the booking API."""
    return clients(identities.a_agent)


@pytest.fixture
def staff(clients: Callable[[Party | None], httpx.AsyncClient], identities: Identities) -> httpx.AsyncClient:
    """Airline staff: publishes flights and fares."""
    return clients(identities.staff)


AIRPORTS = [
    {
        "iata": "CPH",
        "name": "Copenhagen Airport",
        "city": "Copenhagen",
        "country": "DK",
        "time_zone": "Europe/Copenhagen",
    },
    {"iata": "LHR", "name": "London Heathrow", "city": "London", "country": "GB", "time_zone": "Europe/London"},
    {
        "iata": "JFK",
        "name": "John F. Kennedy International",
        "city": "New York",
        "country": "US",
        "time_zone": "America/New_York",
    },
]
# A small jet: 2 business rows of 4, 10 economy rows of 6 = 8 J + 60 Y seats.
SMALL_JET = {
    "code": "T60",
    "name": "Test jet",
    "cabins": [
        {"cabin": "J", "name": "Business", "first_row": 1, "last_row": 2, "layout": "AC-DF", "exit_rows": []},
        {"cabin": "Y", "name": "Economy", "first_row": 3, "last_row": 12, "layout": "ABC-DEF", "exit_rows": [7]},
    ],
}
FARES = [
    {"booking_class": "J", "cabin": "J", "amount": 90000, "currency": "EUR", "seat_limit": 8},
    {"booking_class": "Y", "cabin": "Y", "amount": 30000, "currency": "EUR", "seat_limit": 60},
    {"booking_class": "M", "cabin": "Y", "amount": 15000, "currency": "EUR", "seat_limit": 30},
    {"booking_class": "Q", "cabin": "Y", "amount": 8000, "currency": "EUR", "seat_limit": 5},
]


@dataclass
class Network:
    """Handles on the test network: ``client`` books (agency A's agent), ``staff`` publishes."""

    client: httpx.AsyncClient
    clock: FakeClock
    staff: httpx.AsyncClient

    async def flight(
        self,
        *,
        origin: str = "CPH",
        destination: str = "LHR",
        days: int = 3,
        hour: int = 8,
        number: str | None = None,
        fares: list[dict[str, Any]] | None = None,
        overbooking: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        dep = (self.clock.now() + timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)
        body = {
            "carrier": "XB",
            "flight_number": number or str(uuid.uuid4().int % 9000 + 1000),
            "origin": origin,
            "destination": destination,
            "departure_at": dep.isoformat(),
            "arrival_at": (dep + timedelta(hours=2)).isoformat(),
            "aircraft": "T60",
            "fares": fares or FARES,
            "overbooking": overbooking or {},
        }
        r = await self.staff.post("/v1/flights", json=body)
        assert r.status_code == 201, r.text
        flight: dict[str, Any] = r.json()
        return flight

    async def hold(
        self, flight_id: str, booking_class: str = "M", adults: int = 1, children: int = 0, infants: int = 0, **kw: Any
    ) -> httpx.Response:
        body = {
            "segments": [{"flight_id": flight_id, "booking_class": booking_class}],
            "passengers": {"adults": adults, "children": children, "infants": infants},
        }
        return await self.client.post("/v1/holds", json=body, **kw)


@pytest.fixture
async def network(client: httpx.AsyncClient, staff: httpx.AsyncClient, clock: FakeClock) -> Network:
    for a in AIRPORTS:
        assert (await staff.post("/v1/airports", json=a)).status_code == 201
    assert (await staff.post("/v1/aircraft-types", json=SMALL_JET)).status_code == 201
    return Network(client, clock, staff)


def adult(given: str = "Anna", family: str = "Jensen", born: str = "1985-04-12") -> dict[str, str]:
    return {"type": "ADT", "given_name": given, "family_name": family, "date_of_birth": born}


CARD_OK = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder": "Anna Jensen"}
CARD_DECLINED = {**CARD_OK, "number": "4000000000000002"}
CARD_ERROR = {**CARD_OK, "number": "4000000000000119"}


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(env: dict[str, str], count: int, command: str = "serve", logs: Path | None = None) -> Iterator[list[int]]:
    """``count`` real ``skybook serve`` (or ``skybook api``) processes on free loopback ports, each
    answering ``/ready``; with ``logs``, each writes its output to ``<logs>/<command>-<port>.log``.

    Stopped on exit (SIGINT, then killed if they do not stop within 15 s), whatever happened.
    """
    skybook = str(Path(sys.executable).with_name("skybook"))
    ports = [free_port() for _ in range(count)]
    servers = []
    for p in ports:
        # The server writes to its own copy of the log file; this process keeps no handle open.
        with (logs / f"{command}-{p}.log").open("wb") if logs else contextlib.nullcontext(None) as log:
            servers.append(
                subprocess.Popen(
                    [skybook, command, "--port", str(p)],
                    env=env,
                    stdout=log or subprocess.DEVNULL,
                    stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                )
            )
    try:
        with httpx.Client(timeout=10) as client:
            for port, proc in zip(ports, servers, strict=True):
                deadline = time.monotonic() + 90  # start-up takes seconds on a busy 2-core machine
                while time.monotonic() < deadline and proc.poll() is None:
                    try:
                        if client.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.2)
                else:
                    pytest.fail(f"server did not start (exit code {proc.poll()})")
        yield ports
    finally:
        for s in servers:
            s.send_signal(signal.SIGINT)
        for s in servers:
            try:
                s.wait(timeout=15)
            except subprocess.TimeoutExpired:
                s.kill()
                s.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A tenant's webhook receiver on a free loopback port (plain HTTP)."""
    async with listening() as r:
        yield r

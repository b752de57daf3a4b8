"""Shared fixtures: a real database per backend (SQLite file, PostgreSQL), a wired app, a test network.

PostgreSQL tests skip with a clear message when the server is unreachable on a developer's
machine, and fail when ``CI=true`` so they can never silently skip in CI.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from skybook.app import create_app
from skybook.bootstrap import Container, bootstrap
from skybook.payments import SandboxPaymentProvider
from skybook.platform.clock import FakeClock
from skybook.platform.migrate import upgrade
from skybook.schema import metadata
from skybook.settings import Settings
from tests.invariants import check_seat_invariants

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
        run_workers=False,
        database_pool_size=20,
    )
    c = bootstrap(settings, clock=clock, payments=payments)
    await _truncate(c)
    yield c
    # After every test, however it went: no flight is oversold and every count matches its orders.
    problems = await check_seat_invariants(c.engine)
    await c.engine.dispose()
    assert not problems, problems


# Reference data written by migrations, kept between tests.
REFERENCE_TABLES = frozenset({"plans"})


async def _truncate(c: Container) -> None:
    async with c.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables if t.name not in REFERENCE_TABLES)
            await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                if table.name not in REFERENCE_TABLES:
                    await conn.execute(table.delete())


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


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
    """Handles on the test network."""

    client: httpx.AsyncClient
    clock: FakeClock

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
        r = await self.client.post("/v1/flights", json=body)
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
async def network(client: httpx.AsyncClient, clock: FakeClock) -> Network:
    for a in AIRPORTS:
        assert (await client.post("/v1/airports", json=a)).status_code == 201
    assert (await client.post("/v1/aircraft-types", json=SMALL_JET)).status_code == 201
    return Network(client, clock)


def adult(given: str = "Anna", family: str = "Jensen", born: str = "1985-04-12") -> dict[str, str]:
    return {"type": "ADT", "given_name": given, "family_name": family, "date_of_birth": born}


CARD_OK = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder": "Anna Jensen"}
CARD_DECLINED = {**CARD_OK, "number": "4000000000000002"}
CARD_ERROR = {**CARD_OK, "number": "4000000000000119"}

"""The demo network: real airports, aircraft seat maps, and a schedule turned into dated flights."""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from skybook.bootstrap import Container, bootstrap
from skybook.identity.provisioning import ensure_tenant, ensure_user
from skybook.inventory import handlers
from skybook.inventory.schemas import AircraftTypeCreate, AirportCreate, ScheduleImport
from skybook.inventory.tables import aircraft_types, airports
from skybook.platform.security import Role
from skybook.settings import Settings

# Keys of the demo schedule file that describe the airline, not the import.
_AIRLINE_KEYS = {"airline_name", "accounting_code"}


def _data(name: str) -> Any:
    return json.loads(resources.files("skybook.seed").joinpath("data", name).read_text(encoding="utf-8"))


def schedule_command(raw: dict[str, Any], first: date, last: date) -> ScheduleImport:
    """A schedule import for a period from a schedule file's content."""
    body = {k: v for k, v in raw.items() if k not in _AIRLINE_KEYS}
    body.setdefault("period_start", first.isoformat())
    body.setdefault("period_end", last.isoformat())
    return ScheduleImport.model_validate(body)


async def load_network(container: Container) -> dict[str, int]:
    """Insert the demo airports and aircraft types that are not there yet."""
    async with container.engine.connect() as conn:
        have_airports = set(await conn.scalars(sa.select(airports.c.iata)))
        have_aircraft = set(await conn.scalars(sa.select(aircraft_types.c.code)))
    added = {"airports": 0, "aircraft_types": 0}
    for item in _data("airports.json"):
        if item["iata"] not in have_airports:
            await handlers.create_airport(AirportCreate.model_validate(item), container.uow())
            added["airports"] += 1
    for item in _data("aircraft.json"):
        if item["code"] not in have_aircraft:
            await handlers.create_aircraft_type(AircraftTypeCreate.model_validate(item), container.uow())
            added["aircraft_types"] += 1
    return added


# Development-only accounts, printed by `make run`; `skybook seed demo` refuses them in production.
DEMO_PASSWORD = "skybook-demo-password"  # noqa: S105 - a documented demo credential, refused in production
DEMO_ACCOUNTS = (
    ("Skybook Air", "operator", "operator", "admin@skybook.example.com", Role.PLATFORM_ADMIN),
    ("Skybook Air", "operator", "operator", "staff@skybook.example.com", Role.AIRLINE_STAFF),
    ("Demo Travel", "agency", "standard", "agency-admin@skybook.example.com", Role.TENANT_ADMIN),
    ("Demo Travel", "agency", "standard", "agent@skybook.example.com", Role.AGENT),
    ("Direct sales", "direct", "standard", "traveller@skybook.example.com", Role.TRAVELLER),
)


async def load_accounts(container: Container) -> int:
    """The demo tenants and one account per role, all with DEMO_PASSWORD."""
    if container.settings.environment == "production":
        raise RuntimeError("demo accounts are not created in production")
    password_hash = await container.passwords.hash(DEMO_PASSWORD)
    created = 0
    now = container.clock.now()
    async with container.uow() as uow:
        for tenant, kind, plan, email, role in DEMO_ACCOUNTS:
            tenant_id = await ensure_tenant(uow.conn, name=tenant, kind=kind, plan=plan, now=now)
            _, new = await ensure_user(
                uow.conn,
                tenant_id=tenant_id,
                email=email,
                role=role,
                password=DEMO_PASSWORD,
                password_hash=password_hash,
                now=now,
            )
            created += new
        await uow.commit()
    return created


async def seed_demo(settings: Settings, *, days: int = 14, container: Container | None = None) -> dict[str, int]:
    """Demo accounts, airports, aircraft and ``days`` days of flights from tomorrow; safe to run again."""
    own = container is None
    container = container or bootstrap(settings)
    try:
        accounts = await load_accounts(container)
        added = await load_network(container)
        first = container.clock.now().date() + timedelta(days=1)
        cmd = schedule_command(_data("schedule.json"), first, first + timedelta(days=days - 1))
        result = await handlers.import_schedule(cmd, container.uow(), clock=container.clock)
        return {
            "accounts_created": accounts,
            **added,
            "flights_created": result.created,
            "flights_existing": result.existing,
        }
    finally:
        if own:
            await container.engine.dispose()


async def import_schedule_file(settings: Settings, path: Path, first: date, last: date) -> dict[str, int]:
    """Import a schedule JSON file over a period."""
    container = bootstrap(settings)
    try:
        raw = await asyncio.to_thread(path.read_text, encoding="utf-8")
        cmd = schedule_command(json.loads(raw), first, last)
        result = await handlers.import_schedule(cmd, container.uow(), clock=container.clock)
        return {"flights_created": result.created, "flights_existing": result.existing}
    finally:
        await container.engine.dispose()


async def create_platform_admin(settings: Settings, *, email: str, password: str, tenant: str) -> bool:
    """The operator tenant and its first platform admin; False when the e-mail exists already."""
    container = bootstrap(settings)
    try:
        password_hash = await container.passwords.hash(password)
        now = container.clock.now()
        async with container.uow() as uow:
            tenant_id = await ensure_tenant(uow.conn, name=tenant, kind="operator", plan="operator", now=now)
            _, created = await ensure_user(
                uow.conn,
                tenant_id=tenant_id,
                email=email,
                role=Role.PLATFORM_ADMIN,
                password=password,
                password_hash=password_hash,
                now=now,
            )
            await uow.commit()
        return created
    finally:
        await container.engine.dispose()

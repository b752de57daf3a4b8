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
from skybook.inventory import handlers
from skybook.inventory.schemas import AircraftTypeCreate, AirportCreate, ScheduleImport
from skybook.inventory.tables import aircraft_types, airports
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


async def seed_demo(settings: Settings, *, days: int = 14, container: Container | None = None) -> dict[str, int]:
    """Airports, aircraft and ``days`` days of flights from tomorrow; safe to run again."""
    own = container is None
    container = container or bootstrap(settings)
    try:
        added = await load_network(container)
        first = container.clock.now().date() + timedelta(days=1)
        cmd = schedule_command(_data("schedule.json"), first, first + timedelta(days=days - 1))
        result = await handlers.import_schedule(cmd, container.uow(), clock=container.clock)
        return {**added, "flights_created": result.created, "flights_existing": result.existing}
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

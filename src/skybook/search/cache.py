"""Search caching: leg keys, invalidation tags, the cached sources and the invalidating consumer.

What is cached is a *leg*: the open fare rows of one (origin, destination, local departure date,
cabin) with their seat counts, under a versioned key built from exactly those normalised query
fields. Every search over that route-day and cabin - any party size, page, or the outbound or
return half of a round trip - reuses it; the party, the clock and paging are applied per request.

Each leg is tagged with its route-day. A cached leg records the tag's generation, so an
``inventory.changed`` event for a flight bumps its route-day and every cached leg of that
route-day is stale at once, in O(1); a schedule import (which names no flight) drops everything.
The TTL only bounds what a lost event could cost.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from skybook import inventory
from skybook.platform.cache import ReadThroughCache, Refreshable
from skybook.platform.events import Event
from skybook.platform.uow import UnitOfWork
from skybook.search import queries

CACHE_NAME = "search"
KEY_VERSION = 1
"""Part of every key: bump it when the cached leg changes shape, so old values are never read."""

CABINS = ("F", "J", "W", "Y")
INVALIDATING_EVENTS = frozenset({"inventory.changed", "flight.scheduled", "flight.cancelled", "schedule.imported"})


def route_tag(origin: str, destination: str, day: date) -> str:
    """The tag of one direction of one route on one local departure date."""
    return f"route:{origin}:{destination}:{day.isoformat()}"


def leg_key(origin: str, destination: str, day: date, cabin: str) -> str:
    """The versioned key of one leg (fields already validated: IATA codes, ISO date, cabin letter)."""
    return f"search:v{KEY_VERSION}:leg:{origin}:{destination}:{day.isoformat()}:{cabin}"


class SearchSources:
    """Where searches read airports and legs: legs through the cache, airports memoised."""

    def __init__(self, cache: ReadThroughCache, engine: AsyncEngine) -> None:
        self.cache = cache
        self._engine = engine
        # Airports are only ever added (no route changes or removes one), so a zone once read
        # stays right; unknown codes are not remembered and are looked up again.
        self._zones: dict[str, str] = {}

    async def zones(self, iatas: Sequence[str]) -> dict[str, str]:
        missing = [i for i in iatas if i not in self._zones]
        if missing:
            async with self._engine.connect() as conn:
                self._zones.update(await queries.load_zones(conn, missing))
        return {i: self._zones[i] for i in iatas if i in self._zones}

    async def leg(self, origin: str, destination: str, day: date, cabin: str) -> queries.Leg:
        async def compute() -> bytes:
            # A connection only on a miss: a hit touches no database.
            async with self._engine.connect() as conn:
                return orjson.dumps(await queries.load_leg(conn, origin, destination, day, cabin))

        tags = [route_tag(origin, destination, day)]
        body = await self.cache.get_or_compute(CACHE_NAME, leg_key(origin, destination, day, cabin), tags, compute)
        leg: queries.Leg = orjson.loads(body)
        return leg


class SearchCacheInvalidator:
    """Consumer of inventory events: bumps the route-day tag of every flight they name."""

    name = "search-cache-invalidator"
    event_types = INVALIDATING_EVENTS

    def __init__(self, cache: ReadThroughCache) -> None:
        self._cache = cache

    async def __call__(self, event: Event, uow: UnitOfWork) -> None:
        if event.type == "schedule.imported":
            # Names no flight; imports are rare, so every leg starts afresh.
            await self._cache.invalidate_all(CACHE_NAME)
            return
        ids = event.data.get("flight_ids") or [event.data["flight_id"]]
        f = inventory.flights.c
        rows = await uow.conn.execute(
            sa.select(f.origin, f.destination, f.departure_date).where(f.id.in_([uuid.UUID(str(i)) for i in ids]))
        )
        route_days = sorted({(r.origin, r.destination, r.departure_date) for r in rows})
        # Invalidate and recompute the legs somebody had cached in one step (refresh-ahead): the
        # next searches hit, and until the swap they read the old legs - the event is not handled
        # yet. A Redis failure raises here: the transaction (and its inbox claim) rolls back and the
        # event is delivered again, so the invalidation is retried rather than lost.
        legs: list[Refreshable] = []
        for origin, destination, day in route_days:
            for cabin in CABINS:

                async def compute(o: str = origin, d: str = destination, dd: date = day, c: str = cabin) -> bytes:
                    # Reads the database after the change committed: what the new generation promises.
                    return orjson.dumps(await queries.load_leg(uow.conn, o, d, dd, c))

                legs.append(
                    Refreshable(
                        leg_key(origin, destination, day, cabin), [route_tag(origin, destination, day)], compute
                    )
                )
        await self._cache.invalidate_and_refresh(CACHE_NAME, [route_tag(*rd) for rd in route_days], legs)

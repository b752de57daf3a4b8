"""Search-result caching: keys, invalidation tags and the consumer that bumps them.

A search reads the flights of one (origin, destination, local departure date), two for a round
trip. Each such route-day is a cache tag; a cached result records the tags' generations, so an
``inventory.changed`` event for a flight bumps its route-day and every cached search over that
route-day (any party size, cabin, page or return date) is stale at once, in O(1).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date

import orjson
import sqlalchemy as sa

from skybook import inventory
from skybook.platform.cache import ReadThroughCache
from skybook.platform.events import Event
from skybook.platform.uow import UnitOfWork
from skybook.search.schemas import SearchQuery

CACHE_NAME = "search"
KEY_VERSION = 1
"""Part of every key: bump it when the cached body changes shape, so old values are never read."""

INVALIDATING_EVENTS = frozenset({"inventory.changed", "flight.scheduled", "flight.cancelled"})


def route_tag(origin: str, destination: str, day: date) -> str:
    """The tag of one direction of one route on one local departure date."""
    return f"route:{origin}:{destination}:{day.isoformat()}"


def search_key(q: SearchQuery) -> str:
    """A versioned key from the normalised query (defaults filled in, fields in a fixed order)."""
    canonical = orjson.dumps(q.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return f"search:v{KEY_VERSION}:{hashlib.blake2b(canonical, digest_size=16).hexdigest()}"


def search_tags(q: SearchQuery) -> list[str]:
    """The route-days whose inventory the query reads."""
    tags = [route_tag(q.origin, q.destination, q.departure_date)]
    if q.return_date is not None:
        tags.append(route_tag(q.destination, q.origin, q.return_date))
    return tags


class SearchCacheInvalidator:
    """Consumer of inventory events: bumps the route-day tag of every flight they name."""

    name = "search-cache-invalidator"
    event_types = INVALIDATING_EVENTS

    def __init__(self, cache: ReadThroughCache) -> None:
        self._cache = cache

    async def __call__(self, event: Event, uow: UnitOfWork) -> None:
        ids = event.data.get("flight_ids") or [event.data["flight_id"]]
        f = inventory.flights.c
        rows = await uow.conn.execute(
            sa.select(f.origin, f.destination, f.departure_date).where(f.id.in_([uuid.UUID(str(i)) for i in ids]))
        )
        tags = sorted({route_tag(r.origin, r.destination, r.departure_date) for r in rows})
        # A Redis failure raises here: the transaction (and its inbox claim) rolls back and the
        # event is delivered again, so the invalidation is retried rather than lost.
        await self._cache.invalidate(CACHE_NAME, tags)

"""Seat-map caching: the key and tag of a flight's seat map, the cached source and its invalidator.

A flight's seat map (layout plus which seats are free) is read far more often than seats are
chosen, so it goes through the platform's read-through cache as the finished JSON response: a
hit costs one cache round trip and no serialisation. Each value is tagged with its flight; the
consumer below bumps that tag when seats are assigned (``seat.assigned``) or freed (an
``inventory.changed`` whose order was cancelled or expired), then recomputes the seat maps that
were cached (refresh-ahead). Choosing a seat never reads the cache: the unique constraint on
(flight, seat) in the database decides who gets it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from skybook.booking import queries
from skybook.booking.schemas import SeatMapRead
from skybook.platform.cache import ReadThroughCache, Refreshable
from skybook.platform.events import Event
from skybook.platform.uow import UnitOfWork

CACHE_NAME = "seat_map"
KEY_VERSION = 1
"""Part of every key: bump it when the cached body changes shape, so old values are never read."""

# ``inventory.changed`` reasons that cannot free an assigned seat: a new hold has no seats yet,
# ticketing and fare changes keep them. Any other reason - including one added later - invalidates.
KEEPS_SEAT_ASSIGNMENTS = frozenset({"hold", "ticketed", "fare_update"})


def flight_tag(flight_id: uuid.UUID | str) -> str:
    """The tag of everything cached about one flight's seats."""
    return f"flight:{flight_id}"


def seat_map_key(flight_id: uuid.UUID | str) -> str:
    """The versioned key of a flight's seat map."""
    return f"seatmap:v{KEY_VERSION}:{flight_id}"


async def render_seat_map(conn: AsyncConnection, flight_id: uuid.UUID) -> bytes:
    """The seat map as the API answers it, read from the database (what a miss costs)."""
    return SeatMapRead.model_validate(await queries.seat_map(conn, flight_id)).model_dump_json().encode()


class SeatMaps:
    """Where the seat-map route reads: through the cache, the database on a miss."""

    def __init__(self, cache: ReadThroughCache, engine: AsyncEngine) -> None:
        self.cache = cache
        self._engine = engine

    async def json(self, flight_id: uuid.UUID) -> bytes:
        """The JSON body of the flight's seat map (raises NotFound for an unknown flight; not cached)."""

        async def compute() -> bytes:
            async with self._engine.connect() as conn:
                return await render_seat_map(conn, flight_id)

        return await self.cache.get_or_compute(CACHE_NAME, seat_map_key(flight_id), [flight_tag(flight_id)], compute)


def flights_named(event: Event) -> list[str]:
    """The flights whose seat maps the event may have changed (none if it cannot have)."""
    ids: Iterable[str]
    if event.type == "seat.assigned":
        ids = (str(s["flight_id"]) for s in event.data["seats"])
    elif event.data.get("reason") in KEEPS_SEAT_ASSIGNMENTS:
        ids = ()
    else:
        ids = (str(i) for i in event.data["flight_ids"])
    return sorted(set(ids))


class SeatMapCacheInvalidator:
    """Consumer: bumps the flight tag of every seat map an event may have changed, then refreshes it."""

    name = "seat-map-cache-invalidator"
    event_types = frozenset({"seat.assigned", "inventory.changed"})

    def __init__(self, cache: ReadThroughCache) -> None:
        self._cache = cache

    async def __call__(self, event: Event, uow: UnitOfWork) -> None:
        flight_ids = flights_named(event)
        if not flight_ids:
            return
        # Invalidate and replace the cached seat maps in one step (see the search invalidator);
        # a Redis failure raises here, so the event is delivered again.
        maps: list[Refreshable] = []
        for flight_id in flight_ids:

            async def compute(f: uuid.UUID = uuid.UUID(flight_id)) -> bytes:
                return await render_seat_map(uow.conn, f)

            maps.append(Refreshable(seat_map_key(flight_id), [flight_tag(flight_id)], compute))
        await self._cache.invalidate_and_refresh(CACHE_NAME, [flight_tag(f) for f in flight_ids], maps)

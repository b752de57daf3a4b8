"""Search cache: hits return what a recomputation would, inventory events invalidate, one
recomputation per key at a time, Redis trouble never fails a search, TTL jitter stays bounded.

Each test runs with the in-memory adapter and with Redis (skipped locally when Redis is not
running, a failure with CI=true), on SQLite and PostgreSQL where the database matters.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

import skybook.search.queries as search_queries
from skybook.bootstrap import Container
from skybook.platform.cache import CacheStore, CacheUnavailable, MemoryStore, ReadThroughCache, RedisStore, Refreshable
from tests.conftest import Network
from tests.integration.conftest import RUN_PREFIX, Recomputations, _drop_keys, _redis_store


def _metric(result: str) -> float:
    return REGISTRY.get_sample_value("skybook_cache_requests_total", {"cache": "search", "result": result}) or 0.0


async def _search(client: httpx.AsyncClient, day: str, **extra: Any) -> httpx.Response:
    params = {"origin": "CPH", "destination": "LHR", "departure_date": day, **extra}
    return await client.get("/v1/offers", params=params)


async def _class_seats(network: Network, flight_id: str, code: str) -> int:
    """Seats the database says the booking class can still sell (the staff flight view is never cached)."""
    flight = (await network.staff.get(f"/v1/flights/{flight_id}")).json()
    return int(next(b["seats_available"] for c in flight["cabins"] for b in c["booking_classes"] if b["code"] == code))


async def test_a_repeated_search_is_a_hit_with_the_identical_body(
    cached: Container, network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    flight = await network.flight()
    await cached.dispatcher.drain()
    db = Recomputations(monkeypatch, search_queries, "load_leg")
    hits = _metric("hit")

    first = await _search(network.client, flight["departure_date"], adults=2)
    second = await _search(network.client, flight["departure_date"], adults=2)

    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert second.content == first.content
    assert first.json()["items"][0]["segments"][0]["flight_id"] == flight["id"]
    assert db.count == 1
    assert _metric("hit") == hits + 1
    # Another party size reads the same cached leg, priced for its party; another cabin is another leg.
    three = await _search(network.client, flight["departure_date"], adults=3)
    assert three.json()["items"][0]["total"]["amount"] == 3 * first.json()["items"][0]["segments"][0]["fare"]["amount"]
    assert db.count == 1
    assert (await _search(network.client, flight["departure_date"], cabin="J")).json()["items"]
    assert db.count == 2


async def test_after_a_hold_and_its_event_a_search_never_shows_more_seats_than_the_database(
    cached: Container, network: Network
) -> None:
    flight = await network.flight()
    later = await network.flight(days=4)  # same route, another day
    await cached.dispatcher.drain()
    day = flight["departure_date"]
    before = (await _search(network.client, day)).json()
    assert before["items"][0]["segments"][0]["booking_class"] == "Q"
    assert before["items"][0]["seats_left"] == 5
    other_day = (await _search(network.client, later["departure_date"])).content

    assert (await network.hold(flight["id"], "Q", adults=2)).status_code == 201
    await cached.dispatcher.drain()  # the inventory.changed event is handled

    hits = _metric("hit")
    after = (await _search(network.client, day)).json()
    assert after["items"][0]["seats_left"] == 3 == await _class_seats(network, flight["id"], "Q")
    assert _metric("hit") == hits + 1  # the consumer already recomputed the leg (refresh-ahead)

    # Sell Q out: the offer moves to the next class, exactly as a fresh database read says.
    assert (await network.hold(flight["id"], "Q", adults=3)).status_code == 201
    await cached.dispatcher.drain()
    sold_out = (await _search(network.client, day)).json()
    seg = sold_out["items"][0]["segments"][0]
    assert (seg["booking_class"], seg["seats_left"]) == ("M", await _class_seats(network, flight["id"], "M"))
    # The other day's flight did not change, and its cached answer was not thrown away.
    assert (await _search(network.client, later["departure_date"])).content == other_day


async def test_a_cancelled_flight_leaves_the_cached_offers_once_its_event_is_handled(
    cached: Container, network: Network
) -> None:
    flight = await network.flight()
    await cached.dispatcher.drain()
    assert (await _search(network.client, flight["departure_date"])).json()["page_info"]["total"] == 1
    assert (await network.staff.post(f"/v1/flights/{flight['id']}/cancel")).status_code == 200
    await cached.dispatcher.drain()
    assert (await _search(network.client, flight["departure_date"])).json()["page_info"]["total"] == 0


async def test_concurrent_identical_misses_compute_once(
    cached: Container, network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    flight = await network.flight()
    await cached.dispatcher.drain()
    db = Recomputations(monkeypatch, search_queries, "load_leg", delay=0.05)

    answers = await asyncio.gather(*(_search(network.client, flight["departure_date"]) for _ in range(20)))

    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert db.count == 1


async def test_two_processes_on_one_redis_compute_a_missing_value_once() -> None:
    prefix = f"{RUN_PREFIX}-{uuid.uuid4().hex[:6]}"
    stores = [await _redis_store(prefix), await _redis_store(prefix)]
    # One cache per "process": nothing is shared in memory, only Redis.
    caches = [ReadThroughCache(s, ttl_seconds=60, jitter=0.1, lock_ms=2000, wait_ms=2000) for s in stores]
    computed = 0

    async def compute() -> bytes:
        nonlocal computed
        computed += 1
        await asyncio.sleep(0.1)
        return b'{"answer":42}'

    def ask(cache: ReadThroughCache) -> Awaitable[bytes]:
        return cache.get_or_compute("test", "k", ["route:A:B:2030-01-01"], compute)

    try:
        bodies = await asyncio.gather(*(ask(caches[i % 2]) for i in range(10)))
        assert set(bodies) == {b'{"answer":42}'}
        assert computed == 1
        await caches[1].invalidate("test", ["route:A:B:2030-01-01"])
        assert await ask(caches[0]) == b'{"answer":42}'
        assert computed == 2  # the bump in one process invalidated the value for the other
    finally:
        for s in stores:
            await s.close()
        await _drop_keys(prefix)


async def test_a_search_still_answers_200_when_redis_is_unreachable(
    container: Container, network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    flight = await network.flight()
    container.cache.store = RedisStore("redis://127.0.0.1:1/0", prefix="unreachable", timeout_ms=200)
    container.cache.ttl_seconds = 60
    db = Recomputations(monkeypatch, search_queries, "load_leg")
    errors = _metric("error")

    first = await _search(network.client, flight["departure_date"])
    second = await _search(network.client, flight["departure_date"])

    assert first.status_code == second.status_code == 200
    assert first.json()["items"][0]["segments"][0]["flight_id"] == flight["id"]
    assert second.content == first.content
    assert db.count == 2  # both answered from the database
    assert _metric("error") == errors + 2
    await container.cache.close()


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.5])
def test_ttl_jitter_stays_within_its_bounds(jitter: float) -> None:
    cache = ReadThroughCache(MemoryStore(), ttl_seconds=30, jitter=jitter, rng=random.Random(7))
    ttls = [cache.ttl() for _ in range(2000)]
    assert all(30 * (1 - jitter) <= t <= 30 * (1 + jitter) for t in ttls)
    spread = max(ttls) - min(ttls)
    # Values cached together do expire at different times (and without jitter, all together).
    assert spread > 30 * jitter if jitter else spread == 0


async def test_a_memory_value_expires_after_its_ttl() -> None:
    now = [100.0]
    store = MemoryStore(monotonic=lambda: now[0])
    cache = ReadThroughCache(store, ttl_seconds=10, jitter=0.0)
    calls: list[int] = []

    def compute(n: int) -> Callable[[], Awaitable[bytes]]:
        async def run() -> bytes:
            calls.append(n)
            return str(n).encode()

        return run

    assert await cache.get_or_compute("test", "k", [], compute(1)) == b"1"
    now[0] += 9.9
    assert await cache.get_or_compute("test", "k", [], compute(2)) == b"1"
    now[0] += 0.2
    assert await cache.get_or_compute("test", "k", [], compute(3)) == b"3"
    assert calls == [1, 3]


async def test_a_hold_checks_the_database_not_a_stale_cached_search(cached: Container, network: Network) -> None:
    flight = await network.flight()
    await cached.dispatcher.drain()
    assert (await _search(network.client, flight["departure_date"])).json()["items"][0]["seats_left"] == 5
    assert (await network.hold(flight["id"], "Q", adults=4)).status_code == 201
    # The event is not handled yet, so the cached search may still say 5; the hold path does not ask it.
    second = await network.hold(flight["id"], "Q", adults=2)
    assert second.status_code == 409
    assert second.json()["code"] == "sold_out"


async def test_a_cached_leg_never_offers_a_flight_that_has_departed(cached: Container, network: Network) -> None:
    flight = await network.flight(days=1)
    await cached.dispatcher.drain()
    departure = datetime.fromisoformat(flight["departure_at"])
    day = flight["departure_date"]
    network.clock.advance(departure - network.clock.now() - timedelta(minutes=5))
    assert (await _search(network.client, day)).json()["page_info"]["total"] == 1
    network.clock.advance(timedelta(minutes=10))  # no event says so: the leg is still cached
    assert (await _search(network.client, day)).json()["page_info"]["total"] == 0


class _FlakyStore(MemoryStore):
    """A memory store whose next ``failures`` bumps fail as an unreachable Redis would."""

    failures = 0

    async def bump(self, tags: Sequence[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise CacheUnavailable("down")
        await super().bump(tags)


async def test_an_invalidation_lost_to_an_outage_drops_everything_once_the_store_answers() -> None:
    store = _FlakyStore()
    cache = ReadThroughCache(store, ttl_seconds=60, jitter=0.0)
    version = [1]

    async def compute() -> bytes:
        return str(version[0]).encode()

    assert await cache.get_or_compute("test", "a", ["route:A"], compute) == b"1"
    assert await cache.get_or_compute("test", "b", ["route:B"], compute) == b"1"
    version[0] = 2
    store.failures = 1
    with pytest.raises(CacheUnavailable):  # the consumer fails, so its event is delivered again
        await cache.invalidate("test", ["route:A"])
    await cache.invalidate("test", ["route:C"])  # the store answers again: an unrelated bump
    # Not only route:A but everything is recomputed, whatever the retried event will name.
    assert await cache.get_or_compute("test", "a", ["route:A"], compute) == b"2"
    assert await cache.get_or_compute("test", "b", ["route:B"], compute) == b"2"


async def test_an_invalidation_replaces_a_cached_value_in_one_step_so_readers_never_miss(store: CacheStore) -> None:
    cache = ReadThroughCache(store, ttl_seconds=60, jitter=0.0)
    version, computed = [1], [0]
    computing, release = asyncio.Event(), asyncio.Event()

    async def read() -> bytes:
        computed[0] += 1
        return str(version[0]).encode()

    async def recompute() -> bytes:
        computing.set()
        await release.wait()
        return str(version[0]).encode()

    assert await cache.get_or_compute("test", "k", ["route:A"], read) == b"1"
    version[0] = 2  # the change is committed; its event is being handled
    handling = asyncio.create_task(
        cache.invalidate_and_refresh("test", ["route:A"], [Refreshable("k", ["route:A"], recompute)])
    )
    await computing.wait()
    # Not handled yet: readers still get the value cached before the change, from the cache.
    assert await cache.get_or_compute("test", "k", ["route:A"], read) == b"1"
    release.set()
    await handling
    # Handled: the new value, still without a recomputation on the request path.
    assert await cache.get_or_compute("test", "k", ["route:A"], read) == b"2"
    assert computed[0] == 1


async def test_an_invalidation_racing_the_recomputation_is_never_lost(store: CacheStore) -> None:
    cache = ReadThroughCache(store, ttl_seconds=60, jitter=0.0)
    version = [1]

    async def read() -> bytes:
        return str(version[0]).encode()

    async def recompute_while_another_change_lands() -> bytes:
        seen = str(version[0]).encode()
        if version[0] == 2:  # once: another change commits and its invalidation runs before the swap
            version[0] = 3
            await cache.invalidate("test", ["route:A"])
        return seen

    assert await cache.get_or_compute("test", "k", ["route:A"], read) == b"1"
    version[0] = 2
    await cache.invalidate_and_refresh(
        "test", ["route:A"], [Refreshable("k", ["route:A"], recompute_while_another_change_lands)]
    )
    # The swap saw the moved generation and fell back to bump + refresh: the value is the latest.
    assert await cache.get_or_compute("test", "k", ["route:A"], read) == b"3"

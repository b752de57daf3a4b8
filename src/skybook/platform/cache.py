"""Read-through cache: a small port (``CacheStore``) with Redis and in-memory adapters.

Invalidation is by *tags with generation counters*: every cached value is stored together with
the generations its tags had when the computation started, and a read fetches the value and the
current generations in one round trip (``MGET``). Bumping a tag (``INCR``) therefore invalidates,
in O(1), every value that depends on it, whatever its key; stale values are simply never served
and get overwritten or expire. Reading the generations *before* the database query means a
computation racing with an invalidation is stored under the old generations and never served.

Refresh in one step: an event consumer can recompute the values of the tags it invalidates first
and then ``swap`` - bump the tags and store the new values atomically (a Lua script on Redis),
only if no generation moved meanwhile. Readers get the old values until then (the event is not
handled yet) and the new ones after, so an invalidation costs no miss on the values people read.
The script names several keys, so on a Redis Cluster they would need one hash slot; Skybook uses
a single Redis (or a primary with replicas).

Stampede protection: one computation per key and generation at a time in a process (a shared
future), and across processes on Redis a short ``SET NX PX`` lock; the others wait briefly for the
result and compute themselves if it does not come (so a crashed lock holder costs latency only).

Redis down: the cache steps aside. Reads and writes fail fast (short socket timeouts), the
failure is logged and counted, requests are answered from the database, and Redis is left alone
for ``cache_retry_seconds`` before it is tried again. A search never fails because of the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

log = logging.getLogger("skybook.cache")
T = TypeVar("T")

CACHE_REQUESTS = Counter(
    "skybook_cache_requests",
    "Cache look-ups by cache and result: hit (answered from the cache), miss (recomputed from the database), "
    "coalesced (waited for the same recomputation running for another request), error (the backend failed "
    "and the database answered).",
    ["cache", "result"],
)
CACHE_MISSES = Counter(
    "skybook_cache_misses",
    "Misses by cause: cold (nothing cached: never asked for, expired or evicted) or stale (cached, but "
    "invalidated since).",
    ["cache", "reason"],
)
CACHE_SECONDS = Histogram(
    "skybook_cache_seconds",
    "Time to answer a cached read, from the cache (hit) or by recomputing it (miss, error).",
    ["cache", "result"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CACHE_INVALIDATIONS = Counter(
    "skybook_cache_invalidations", "Tags bumped (each invalidates every value that depends on it).", ["cache"]
)
CACHE_REFRESHES = Counter(
    "skybook_cache_refreshes", "Values recomputed right after their invalidation, off the request path.", ["cache"]
)
CACHE_BACKEND_ERRORS = Counter("skybook_cache_backend_errors", "Cache backend failures by operation.", ["op"])


class CacheUnavailable(Exception):
    """The cache backend cannot be used right now; callers fall back to the source of truth."""


class CacheStore(Protocol):
    """The port: what the read-through cache needs from a backend."""

    async def fetch(self, key: str, tags: Sequence[str]) -> tuple[bytes | None, list[int]]:
        """The stored value of ``key`` (or None) and the current generation of each tag."""

    async def store(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl_seconds``."""

    async def bump(self, tags: Sequence[str]) -> None:
        """Advance the generation of every tag."""

    async def swap(
        self, expected: Mapping[str, int], bump: Sequence[str], values: Mapping[str, tuple[bytes, float]]
    ) -> bool:
        """Atomically: if every tag of ``expected`` is still at its generation, bump the ``bump`` tags and
        store ``values`` (key -> value, TTL seconds); else change nothing and answer False."""

    async def try_lock(self, key: str, ttl_ms: int) -> bool:
        """Take the short recomputation lock of ``key``; False if another process holds it."""

    async def unlock(self, key: str) -> None:
        """Give the recomputation lock back."""

    async def close(self) -> None:
        """Release connections."""


class MemoryStore:
    """In-process adapter for the embedded default (one process runs the API and the dispatcher)."""

    def __init__(self, max_entries: int = 10_000, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._values: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._tags: dict[str, int] = {}
        self._max = max_entries
        self._now = monotonic

    async def fetch(self, key: str, tags: Sequence[str]) -> tuple[bytes | None, list[int]]:
        gens = [self._tags.get(t, 0) for t in tags]
        item = self._values.get(key)
        if item is None:
            return None, gens
        if item[0] <= self._now():
            del self._values[key]
            return None, gens
        return item[1], gens

    async def store(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._values[key] = (self._now() + ttl_seconds, value)
        self._values.move_to_end(key)
        while len(self._values) > self._max:  # oldest write goes first; bounded memory
            self._values.popitem(last=False)

    async def bump(self, tags: Sequence[str]) -> None:
        for t in tags:
            self._tags[t] = self._tags.get(t, 0) + 1

    async def swap(
        self, expected: Mapping[str, int], bump: Sequence[str], values: Mapping[str, tuple[bytes, float]]
    ) -> bool:
        # No await below: nothing else in the process runs between the check and the writes.
        if any(self._tags.get(t, 0) != g for t, g in expected.items()):
            return False
        for t in bump:
            self._tags[t] = self._tags.get(t, 0) + 1
        for key, (value, ttl) in values.items():
            self._values[key] = (self._now() + ttl, value)
            self._values.move_to_end(key)
        while len(self._values) > self._max:
            self._values.popitem(last=False)
        return True

    async def try_lock(self, key: str, ttl_ms: int) -> bool:
        return True  # one process: the in-process single flight already serialises recomputation

    async def unlock(self, key: str) -> None:
        return None

    async def close(self) -> None:
        return None


class NullStore:
    """No caching: used when values could not be invalidated (no Redis, events handled elsewhere)."""

    async def fetch(self, key: str, tags: Sequence[str]) -> tuple[bytes | None, list[int]]:
        return None, [0] * len(tags)

    async def store(self, key: str, value: bytes, ttl_seconds: float) -> None:
        return None

    async def bump(self, tags: Sequence[str]) -> None:
        return None

    async def swap(
        self, expected: Mapping[str, int], bump: Sequence[str], values: Mapping[str, tuple[bytes, float]]
    ) -> bool:
        return True

    async def try_lock(self, key: str, ttl_ms: int) -> bool:
        return True

    async def unlock(self, key: str) -> None:
        return None

    async def close(self) -> None:
        return None


# Tag counters must outlive every value that recorded them: if a counter expired and restarted at
# 0, a value stored at generation 0 would become valid again. A day is far above any value TTL.
TAG_TTL_SECONDS = 86_400
FAILURES_BEFORE_BYPASS = 3
ALL_TAG = "*"
"""Implicitly on every cached value: bumping it invalidates everything."""

# KEYS: n tag keys, then the value keys. ARGV: n, the n expected generations, n bump flags, then a
# value and its TTL in ms per value key, then the tag TTL. One script, so no other client's bump or
# read can fall between the check and the writes.
_SWAP_LUA = """
local n = tonumber(ARGV[1])
for i = 1, n do
  if tonumber(redis.call('GET', KEYS[i]) or '0') ~= tonumber(ARGV[1 + i]) then return 0 end
end
local tag_ttl = ARGV[#ARGV]
for i = 1, n do
  if ARGV[1 + n + i] == '1' then
    redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], tag_ttl)
  end
end
for j = 1, #KEYS - n do
  redis.call('SET', KEYS[n + j], ARGV[2 * n + 2 * j], 'PX', ARGV[2 * n + 2 * j + 1])
end
return 1
"""


class RedisStore:
    """Redis adapter (redis.asyncio); shared by every API and worker process."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        timeout_ms: int = 500,
        retry_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_ms / 1000,
            socket_connect_timeout=timeout_ms / 1000,
            retry_on_timeout=False,
        )
        self._swap = self._redis.register_script(_SWAP_LUA)
        self._prefix = prefix
        self._retry = retry_seconds
        self._now = monotonic
        self._down_until = 0.0
        self._failures = 0

    def _k(self, key: str) -> str:
        return f"{self._prefix}:c:{key}"

    def _t(self, tag: str) -> str:
        return f"{self._prefix}:t:{tag}"

    def _l(self, key: str) -> str:
        return f"{self._prefix}:l:{key}"

    async def _call(self, op: str, make: Callable[[], Awaitable[T]], *, always: bool = False) -> T:
        if not always and self._down_until > self._now():
            raise CacheUnavailable("redis bypassed after failures")
        try:
            result = await make()
        except (RedisError, OSError, TimeoutError) as exc:
            CACHE_BACKEND_ERRORS.labels(op).inc()
            self._failures += 1
            if self._failures >= FAILURES_BEFORE_BYPASS:
                # Several failures in a row: stop paying a timeout on every request for a while.
                self._down_until = self._now() + self._retry
                log.warning(
                    "redis cache %s failed (%s: %s); bypassing it for %ss", op, type(exc).__name__, exc, self._retry
                )
            raise CacheUnavailable(str(exc)) from exc
        self._failures = 0
        return result

    async def fetch(self, key: str, tags: Sequence[str]) -> tuple[bytes | None, list[int]]:
        raw = await self._call("fetch", lambda: self._redis.mget([self._k(key), *(self._t(t) for t in tags)]))
        value = raw[0]
        return (value.encode() if isinstance(value, str) else value), [int(g) if g is not None else 0 for g in raw[1:]]

    async def store(self, key: str, value: bytes, ttl_seconds: float) -> None:
        await self._call("store", lambda: self._redis.set(self._k(key), value, px=max(1, int(ttl_seconds * 1000))))

    async def bump(self, tags: Sequence[str]) -> None:
        async def run() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for t in tags:
                    pipe.incr(self._t(t))
                    pipe.expire(self._t(t), TAG_TTL_SECONDS)
                await pipe.execute()

        if tags:
            # Always tried, even while reads bypass Redis: an invalidation must not be skipped.
            await self._call("bump", run, always=True)

    async def swap(
        self, expected: Mapping[str, int], bump: Sequence[str], values: Mapping[str, tuple[bytes, float]]
    ) -> bool:
        tags = list(expected)
        bumped = set(bump)
        if not bumped <= set(tags):
            raise ValueError("every bumped tag must be among the expected ones")
        keys = [*(self._t(t) for t in tags), *(self._k(k) for k in values)]
        args: list[str | bytes | int] = [len(tags), *(expected[t] for t in tags), *(int(t in bumped) for t in tags)]
        for value, ttl in values.values():
            args += [value, max(1, int(ttl * 1000))]
        args.append(TAG_TTL_SECONDS)
        # Always tried, like bump: it carries an invalidation.
        return bool(await self._call("swap", lambda: self._swap(keys=keys, args=args), always=True))

    async def try_lock(self, key: str, ttl_ms: int) -> bool:
        return bool(await self._call("lock", lambda: self._redis.set(self._l(key), b"1", nx=True, px=ttl_ms)))

    async def unlock(self, key: str) -> None:
        await self._call("unlock", lambda: self._redis.delete(self._l(key)))

    async def close(self) -> None:
        await self._redis.aclose()


def _encode(gens: Sequence[int], body: bytes) -> bytes:
    return b",".join(str(g).encode() for g in gens) + b"\n" + body


def _decode(raw: bytes) -> tuple[list[int], bytes]:
    head, _, body = raw.partition(b"\n")
    return ([int(g) for g in head.split(b",")] if head else []), body


@dataclass(frozen=True, slots=True)
class Refreshable:
    """A cached value an invalidation may recompute at once: its key, its tags and how to compute it."""

    key: str
    tags: Sequence[str]
    compute: Callable[[], Awaitable[bytes]]


class ReadThroughCache:
    """Cached computations keyed by a string and tagged for invalidation."""

    def __init__(
        self,
        store: CacheStore,
        *,
        ttl_seconds: float,
        jitter: float,
        lock_ms: int = 2000,
        wait_ms: int = 200,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.jitter = jitter
        self._lock_ms = lock_ms
        self._wait_ms = wait_ms
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        # Set when an invalidation could not reach the store: once it answers again everything is
        # dropped (the ALL tag), since values written before the outage may have missed it.
        self._flush_pending = False

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0 and not isinstance(self.store, NullStore)

    def ttl(self) -> float:
        """A TTL drawn uniformly from ``ttl * (1 ± jitter)`` so values cached together do not expire together."""
        return self.ttl_seconds * (1 + self._rng.uniform(-self.jitter, self.jitter))

    async def get_or_compute(
        self, cache: str, key: str, tags: Sequence[str], compute: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """The cached bytes of ``key`` if still valid for ``tags``, else ``compute()`` (once per key)."""
        if not self.enabled:
            return await compute()
        tags = [*tags, ALL_TAG]
        started = time.perf_counter()
        try:
            raw, gens = await self.store.fetch(key, tags)
        except CacheUnavailable:
            raw, gens = None, None
        if raw is not None and gens is not None:
            stored_gens, body = _decode(raw)
            if stored_gens == gens:
                self._observe(cache, "hit", started)
                return body
        if gens is not None:
            CACHE_MISSES.labels(cache, "cold" if raw is None else "stale").inc()
        # In-process single flight; with the backend down the key alone identifies the work.
        flight_key = f"{key}|{'down' if gens is None else ','.join(map(str, gens))}"
        running = self._inflight.get(flight_key)
        if running is not None:
            # Someone in this process is already computing this very value: share its answer.
            body = await asyncio.shield(running)
            self._observe(cache, "coalesced" if gens is not None else "error", started)
            return body
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[flight_key] = future
        try:
            body = await (compute() if gens is None else self._fill(key, tags, gens, compute))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else has to
            raise
        else:
            future.set_result(body)
        finally:
            del self._inflight[flight_key]
        self._observe(cache, "miss" if gens is not None else "error", started)
        return body

    async def _fill(
        self, key: str, tags: Sequence[str], gens: list[int], compute: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        try:
            locked = await self.store.try_lock(key, self._lock_ms)
        except CacheUnavailable:
            return await compute()
        if not locked:
            waited = await self._wait_for_other(key, tags, gens)
            if waited is not None:
                return waited
        try:
            body = await compute()
            with contextlib.suppress(CacheUnavailable):
                await self.store.store(key, _encode(gens, body), self.ttl())
            return body
        finally:
            if locked:
                with contextlib.suppress(CacheUnavailable):
                    await self.store.unlock(key)

    async def _wait_for_other(self, key: str, tags: Sequence[str], gens: list[int]) -> bytes | None:
        """Another process holds the lock: poll briefly for its result (bounded by ``wait_ms``)."""
        deadline = time.monotonic() + self._wait_ms / 1000
        while time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            try:
                raw, now_gens = await self.store.fetch(key, tags)
            except CacheUnavailable:
                return None
            if now_gens != gens:
                return None  # invalidated meanwhile: compute afresh
            if raw is not None:
                stored_gens, body = _decode(raw)
                if stored_gens == gens:
                    return body
        return None

    async def refresh(self, cache: str, key: str, tags: Sequence[str], compute: Callable[[], Awaitable[bytes]]) -> bool:
        """Recompute a value that is cached (stale or not) under the tags' current generations.

        Called right after an invalidation, it moves the recomputation off the request path; a
        key nobody has cached is left alone. Best effort: False if nothing was stored.
        """
        if not self.enabled:
            return False
        tags = [*tags, ALL_TAG]
        try:
            raw, gens = await self.store.fetch(key, tags)
            if raw is None:
                return False
            body = await compute()  # reads the database after the bump: consistent with ``gens``
            await self.store.store(key, _encode(gens, body), self.ttl())
        except CacheUnavailable:
            return False
        CACHE_REFRESHES.labels(cache).inc()
        return True

    async def invalidate_and_refresh(self, cache: str, tags: Sequence[str], values: Sequence[Refreshable]) -> None:
        """Invalidate ``tags`` and, in the same atomic step, replace those of ``values`` that are cached.

        The new values are computed first (after the change that invalidates them was committed),
        then one ``swap`` bumps the tags and stores them, provided no generation moved meanwhile.
        Until then readers keep getting the old values - the invalidating event is not handled
        yet, so that is all they were promised - and after it the new ones: a change costs the
        keys people read no miss. If a concurrent invalidation moved a generation, it falls back
        to bump-then-refresh. Raises CacheUnavailable, like ``invalidate``, so the event is retried.
        """
        if not self.enabled or self._flush_pending:
            await self._invalidate_then_refresh(cache, tags, values)
            return
        expected: dict[str, int] = {}
        cached: list[tuple[Refreshable, list[str], list[int]]] = []
        consistent = True
        try:
            for v in values:
                vtags = [*v.tags, ALL_TAG]
                raw, gens = await self.store.fetch(v.key, vtags)
                for t, g in zip(vtags, gens, strict=True):
                    consistent = consistent and expected.setdefault(t, g) == g
                if raw is not None:
                    cached.append((v, vtags, gens))
        except CacheUnavailable:
            await self.invalidate(cache, tags)  # raises if the store is still down
            return
        if not cached or not consistent:
            await self._invalidate_then_refresh(cache, tags, [v for v, _, _ in cached])
            return
        bump = set(tags)
        fresh: dict[str, tuple[bytes, float]] = {}
        try:
            for v, vtags, gens in cached:
                body = await v.compute()
                fresh[v.key] = (_encode([g + (t in bump) for t, g in zip(vtags, gens, strict=True)], body), self.ttl())
        except BaseException:
            await self.invalidate(cache, tags)  # never leave the old values valid because a recomputation failed
            raise
        covered = [t for t in tags if t in expected]
        others = [t for t in tags if t not in expected]
        try:
            if others:
                await self.store.bump(others)
            swapped = await self.store.swap(expected, covered, fresh)
        except CacheUnavailable:
            self._flush_pending = True
            raise
        if not swapped:
            await self._invalidate_then_refresh(cache, tags, [v for v, _, _ in cached])
            return
        CACHE_INVALIDATIONS.labels(cache).inc(len(tags))
        CACHE_REFRESHES.labels(cache).inc(len(fresh))

    async def _invalidate_then_refresh(self, cache: str, tags: Sequence[str], values: Sequence[Refreshable]) -> None:
        await self.invalidate(cache, tags)
        for v in values:
            await self.refresh(cache, v.key, v.tags, v.compute)

    async def invalidate(self, cache: str, tags: Sequence[str]) -> None:
        """Bump every tag; raises CacheUnavailable so an event consumer is retried."""
        if self._flush_pending:
            tags = [*tags, ALL_TAG]
        if not tags:
            return
        try:
            await self.store.bump(tags)
        except CacheUnavailable:
            self._flush_pending = True
            raise
        self._flush_pending = False
        CACHE_INVALIDATIONS.labels(cache).inc(len(tags))

    async def invalidate_all(self, cache: str) -> None:
        """Make every cached value stale at once."""
        await self.invalidate(cache, [ALL_TAG])

    async def close(self) -> None:
        await self.store.close()

    @staticmethod
    def _observe(cache: str, result: str, started: float) -> None:
        CACHE_REQUESTS.labels(cache, result).inc()
        CACHE_SECONDS.labels(cache, result).observe(time.perf_counter() - started)

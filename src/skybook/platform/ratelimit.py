"""Rate limits over the ``limits`` library: in memory, or in Redis so every replica shares them.

Every API request counts against two limits (its principal's and its tenant's). On Redis that was
four round trips through ``limits`` (count and read back, twice); ``hit_all`` does the same
sliding-window counting for both in one Lua script call, on the very keys ``limits`` uses, so the
counts stay shared with ``peek``/``clear`` and with processes running the library path.

When Redis is unreachable the API limits *fail open* (requests go through and a warning is
logged): seats, payments and idempotency are protected by the database, not by the limiter, and
an outage of a cache should not become an outage of sales. The login guard *fails closed*
(503): without it nothing stops password guessing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

log = logging.getLogger("skybook.ratelimit")


class LimiterUnavailable(Exception):
    """The shared limiter store cannot be reached."""


@dataclass(frozen=True, slots=True)
class LimitResult:
    """Outcome of counting one request against one limit."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window frees capacity

    def headers(self) -> list[tuple[bytes, bytes]]:
        """IETF RateLimit header fields, plus Retry-After when refused."""
        out = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_after).encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(max(1, self.reset_after)).encode()))
        return out


# The sliding-window counting of limits' acquire_sliding_window.lua, for several limits in one
# call: stops at the first limit that refuses (later ones are not counted), and returns for each
# limit counted {allowed, previous count, previous ttl ms, current count, current ttl ms}.
_HIT_ALL = """
local expiry = tonumber(ARGV[1]) * 1000
local out = {}
for i = 1, #KEYS / 2 do
    local previous_key, current_key = KEYS[2 * i - 1], KEYS[2 * i]
    local limit = tonumber(ARGV[i + 1])
    local current_ttl = tonumber(redis.call('pttl', current_key))
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', current_key, previous_key)
        redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
    end
    local previous_count = tonumber(redis.call('get', previous_key)) or 0
    local previous_ttl = tonumber(redis.call('pttl', previous_key)) or 0
    local current_count = tonumber(redis.call('get', current_key)) or 0
    current_ttl = tonumber(redis.call('pttl', current_key)) or 0
    if previous_ttl < 0 then previous_ttl = 0 end
    if current_ttl < 0 then current_ttl = 0 end
    local allowed = 0
    if math.floor(previous_count * previous_ttl / expiry) + current_count + 1 <= limit then
        allowed = 1
        if redis.call('exists', current_key) == 1 then
            current_count = redis.call('incrby', current_key, 1)
        else
            redis.call('set', current_key, 1, 'PX', expiry * 2)
            current_count, current_ttl = 1, expiry * 2
        end
    end
    out[i] = {allowed, previous_count, previous_ttl, current_count, current_ttl}
    if allowed == 0 then break end
end
return out
"""
_WINDOW_SECONDS = 60  # every limit here is per minute


def _stats(limit: int, previous: int, previous_ttl_s: float, current: int, current_ttl_s: float) -> tuple[int, int]:
    """(remaining, seconds to reset) as limits' ``get_window_stats`` computes them."""
    weighted = previous * previous_ttl_s / _WINDOW_SECONDS + current
    remaining = max(0, limit - math.floor(weighted))
    if not (previous or current):
        return remaining, 0
    previous_reset = previous_ttl_s % (_WINDOW_SECONDS / previous) if previous else math.inf
    current_reset = current_ttl_s % _WINDOW_SECONDS if current else math.inf
    return remaining, max(0, math.ceil(min(previous_reset, current_reset)))


class RateLimiter:
    """Counts hits per (namespace, identifiers) against per-minute limits."""

    def __init__(self, storage_uri: str) -> None:
        self.storage_uri = storage_uri
        self._storage = storage_from_string(storage_uri)
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)
        self._items: dict[tuple[str, int], RateLimitItem] = {}
        self._script: Any = None
        # One script call per request needs every key on one server: plain Redis URLs only
        # (a cluster or sentinel URI keeps the library's per-limit calls).
        scheme = storage_uri.removeprefix("async+").split("://", 1)[0]
        if scheme in {"redis", "rediss"}:
            import redis.asyncio as redis

            client = redis.Redis.from_url(
                storage_uri.removeprefix("async+"), socket_connect_timeout=1.0, socket_timeout=1.0
            )
            self._script = client.register_script(_HIT_ALL)

    def _item(self, namespace: str, per_minute: int) -> RateLimitItem:
        key = (namespace, per_minute)
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = RateLimitItemPerMinute(per_minute, namespace=namespace)
        return item

    async def hit(self, namespace: str, per_minute: int, *identifiers: str) -> LimitResult:
        """Count one request; raises ``LimiterUnavailable`` when the store is down."""
        item = self._item(namespace, per_minute)
        try:
            allowed = await self._strategy.hit(item, *identifiers)
            stats = await self._strategy.get_window_stats(item, *identifiers)
        except Exception as exc:  # redis-py raises several connection error types
            raise LimiterUnavailable(str(exc)) from exc
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return LimitResult(allowed, per_minute, max(0, stats.remaining), reset)

    async def hit_all(self, limits: Sequence[tuple[str, int, str]]) -> list[LimitResult]:
        """Count one request against each ``(namespace, per_minute, identifier)`` in order.

        Stops at the first limit that refuses: the result then ends with that refusal, and the
        later limits are not counted. One Redis round trip for all of them; raises
        ``LimiterUnavailable`` when the store is down.
        """
        if self._script is None:
            results: list[LimitResult] = []
            for namespace, per_minute, identifier in limits:
                results.append(await self.hit(namespace, per_minute, identifier))
                if not results[-1].allowed:
                    break
            return results
        keys: list[str] = []
        for namespace, per_minute, identifier in limits:
            current = "LIMITS:{" + self._item(namespace, per_minute).key_for(identifier) + "}"
            keys += [current + "/-1", current]
        try:
            rows = await self._script(keys=keys, args=[_WINDOW_SECONDS, *(limit for _, limit, _ in limits)])
        except Exception as exc:  # redis-py raises several connection error types
            raise LimiterUnavailable(str(exc)) from exc
        out = []
        for (_, per_minute, _), (allowed, previous, previous_ttl, current, current_ttl) in zip(
            limits, rows, strict=False
        ):
            remaining, reset = _stats(
                per_minute, int(previous), int(previous_ttl) / 1000, int(current), int(current_ttl) / 1000
            )
            out.append(LimitResult(bool(allowed), per_minute, remaining, reset))
        return out

    async def peek(self, namespace: str, per_minute: int, *identifiers: str) -> LimitResult:
        """Where a limit stands, without counting."""
        item = self._item(namespace, per_minute)
        try:
            ok = await self._strategy.test(item, *identifiers)
            stats = await self._strategy.get_window_stats(item, *identifiers)
        except Exception as exc:
            raise LimiterUnavailable(str(exc)) from exc
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return LimitResult(ok, per_minute, max(0, stats.remaining), reset)

    async def clear(self, namespace: str, per_minute: int, *identifiers: str) -> None:
        try:
            await self._strategy.clear(self._item(namespace, per_minute), *identifiers)
        except Exception:  # clearing is best effort
            log.warning("could not clear rate limit %s", namespace)


def limiter_uri(redis_url: str | None) -> str:
    """Storage URI for ``limits``: Redis when configured, memory otherwise."""
    if not redis_url:
        return "async+memory://"
    return "async+" + redis_url

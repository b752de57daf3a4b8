"""Rate limits over the ``limits`` library: in memory, or in Redis so every replica shares them.

When Redis is unreachable the API limits *fail open* (requests go through and a warning is
logged): seats, payments and idempotency are protected by the database, not by the limiter, and
an outage of a cache should not become an outage of sales. The login guard *fails closed*
(503): without it nothing stops password guessing.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

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


class RateLimiter:
    """Counts hits per (namespace, identifiers) against per-minute limits."""

    def __init__(self, storage_uri: str) -> None:
        self.storage_uri = storage_uri
        self._storage = storage_from_string(storage_uri)
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)
        self._items: dict[tuple[str, int], RateLimitItem] = {}

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

"""Fixtures of the cache tests: the cache adapter under test (memory, Redis) and a container using it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest

from skybook.bootstrap import Container
from skybook.platform.cache import CacheStore, MemoryStore, RedisStore
from tests.conftest import _unavailable

REDIS_URL = os.environ.get("SKYBOOK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RUN_PREFIX = f"skybook-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def _redis_store(prefix: str) -> RedisStore:
    import redis.asyncio as redis

    probe = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        await probe.ping()
    except Exception as err:  # any failure to reach it: skip locally, fail in CI
        _unavailable("Redis", err)
    finally:
        await probe.aclose()
    # Generous timeout: on a busy CI machine a slow connect must not look like an outage here.
    return RedisStore(REDIS_URL, prefix=prefix, timeout_ms=5000)


async def _drop_keys(prefix: str) -> None:
    import redis.asyncio as redis

    r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CacheStore]:
    """The adapter under test; Redis keys carry a prefix unique to this run and test."""
    if request.param == "memory":
        yield MemoryStore()
        return
    prefix = f"{RUN_PREFIX}-{uuid.uuid4().hex[:6]}"
    s = await _redis_store(prefix)
    yield s
    await s.close()
    await _drop_keys(prefix)


@pytest.fixture
def cached(container: Container, store: CacheStore) -> Container:
    """The test container with the cache (search, seat maps) switched on over the adapter under test."""
    container.cache.store = store
    container.cache.ttl_seconds = 60
    return container


class Recomputations:
    """Counts (and can slow down) the database reads behind a cache: ``module.function`` is wrapped."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, module: ModuleType, function: str, *, delay: float = 0.0
    ) -> None:
        self.count = 0
        real = getattr(module, function)

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            if delay:
                await asyncio.sleep(delay)
            return await real(*args, **kwargs)

        monkeypatch.setattr(module, function, counting)

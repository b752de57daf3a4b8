"""The principal cache serves a principal at most one bound after a change, and never waits otherwise.

Time here is a fake monotonic clock and the database is a dict with a change counter, so each
test states exactly when a change commits, when checks run and what a request then gets.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from skybook.identity.authn import PrincipalCache, PrincipalKey
from skybook.identity.handlers import PrincipalRow
from skybook.platform.security import Principal, Role

TTL = 1.0
POLL = 0.25
ALICE: PrincipalKey = ("user", uuid.UUID(int=1))
BOB: PrincipalKey = ("user", uuid.UUID(int=2))


def _row(key: PrincipalKey, session_version: int = 1, active: bool = True) -> PrincipalRow:
    principal = Principal(
        id=key[1],
        kind="user",
        role=Role.AGENT,
        tenant_id=uuid.UUID(int=99),
        plan="standard",
        rate_limit=60,
        tenant_rate_limit=600,
        max_unpaid_seats=9,
    )
    return PrincipalRow(principal, session_version, active)


class Store:
    """The database as the cache sees it: rows, a version moved with each change, counted reads."""

    def __init__(self) -> None:
        self.rows = {ALICE: _row(ALICE), BOB: _row(BOB)}
        self.version = 1
        self.singles = 0
        self.batches = 0
        self.down = False
        self.stall: asyncio.Event | None = None  # version reads wait for it while set
        self.stall_once: asyncio.Event | None = None  # only the next version read waits for it

    def change(self, key: PrincipalKey, **fields: object) -> None:
        old = self.rows[key]
        self.rows[key] = _row(
            key, int(fields.get("session_version", old.session_version)), bool(fields.get("active", old.active))
        )
        self.version += 1  # the trigger, in the same transaction

    async def load_one(self, key: PrincipalKey) -> PrincipalRow | None:
        self.singles += 1
        return self.rows.get(key)

    async def load_many(self, keys: list[PrincipalKey]) -> dict[PrincipalKey, PrincipalRow | None]:
        self.batches += 1
        return {k: self.rows.get(k) for k in keys}

    async def read_version(self) -> int:
        if self.stall is not None:
            await self.stall.wait()
        if self.stall_once is not None:
            once, self.stall_once = self.stall_once, None
            await once.wait()
        if self.down:
            raise ConnectionError("database unreachable")
        return self.version


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(store: Store, clock: Clock) -> PrincipalCache:
    return PrincipalCache(TTL, store.load_one, store.load_many, store.read_version, poll_every=POLL, monotonic=clock)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_cached_principal_costs_no_read_until_a_check_is_due(
    cache: PrincipalCache, store: Store, clock: Clock
) -> None:
    assert await cache.get(ALICE) == store.rows[ALICE]
    assert (cache.checks, store.singles) == (1, 1)
    for _ in range(100):
        clock.t += 0.002
        assert await cache.get(ALICE) == store.rows[ALICE]
    assert (cache.checks, store.singles, store.batches) == (1, 1, 0)
    clock.t += POLL
    await cache.get(ALICE)  # starts a check in the background and answers at once
    await _settle()
    assert (cache.checks, store.singles, store.batches) == (2, 1, 0)


async def test_a_signalled_change_is_served_after_the_next_check(
    cache: PrincipalCache, store: Store, clock: Clock
) -> None:
    await cache.get(ALICE)
    await cache.get(BOB)
    store.change(ALICE, session_version=2)  # logout
    clock.t += POLL
    await cache.get(BOB)
    await _settle()
    row = await cache.get(ALICE)
    assert row is not None and row.session_version == 2
    assert store.batches == 1  # one reload of the principals in use, not one read per principal


async def test_no_principal_is_served_past_the_bound_without_a_fresh_check(
    cache: PrincipalCache, store: Store, clock: Clock
) -> None:
    await cache.get(ALICE)
    store.stall = asyncio.Event()  # checks start but do not finish
    clock.t += POLL
    await cache.get(ALICE)  # background check, stuck
    store.change(ALICE, active=False)  # the change commits while that check hangs
    clock.t += TTL - POLL - 0.01
    stale = await cache.get(ALICE)  # within the bound: still the confirmed row
    assert stale is not None and stale.active
    clock.t += 0.02  # the bound has passed: the request must wait for a check
    waiting = asyncio.ensure_future(cache.get(ALICE))
    await _settle()
    assert not waiting.done()
    store.stall.set()
    row = await waiting
    assert row is not None and not row.active


async def test_when_the_signal_cannot_be_read_requests_fail_after_the_bound_instead_of_serving_stale(
    cache: PrincipalCache, store: Store, clock: Clock
) -> None:
    await cache.get(ALICE)
    store.down = True
    clock.t += POLL
    assert await cache.get(ALICE) == store.rows[ALICE]  # the failed background check is not fatal
    await _settle()
    clock.t += TTL
    with pytest.raises(ConnectionError):
        await cache.get(ALICE)
    store.down = False
    assert await cache.get(ALICE) == store.rows[ALICE]  # and it recovers by itself


async def test_a_load_that_began_before_a_signalled_change_is_not_kept(
    cache: PrincipalCache, store: Store, clock: Clock
) -> None:
    await cache.get(ALICE)
    old = store.rows[BOB]
    slow = asyncio.Event()

    async def slow_load(key: PrincipalKey) -> PrincipalRow | None:
        await slow.wait()
        return old  # read before the change below

    cache._load_one = slow_load  # type: ignore[method-assign]
    loading = asyncio.ensure_future(cache.get(BOB))
    await _settle()
    store.change(BOB, active=False)
    clock.t += POLL
    await cache.get(ALICE)  # the check sees the change
    await _settle()
    slow.set()
    assert await loading is old  # that request read before the change: fine for it
    cache._load_one = store.load_one  # type: ignore[method-assign]
    row = await cache.get(BOB)  # but the cache did not keep the old row
    assert row is not None and not row.active


async def test_principals_unused_for_a_while_leave_the_cache(cache: PrincipalCache, store: Store, clock: Clock) -> None:
    await cache.get(ALICE)
    await cache.get(BOB)
    for _ in range(int(cache.keep / POLL) + 2):
        clock.t += POLL
        await cache.get(ALICE)
        await _settle()
    singles = store.singles
    await cache.get(BOB)
    assert store.singles == singles + 1


async def test_a_hung_check_does_not_hold_back_the_next_one(cache: PrincipalCache, store: Store, clock: Clock) -> None:
    await cache.get(ALICE)
    hung = store.stall_once = asyncio.Event()
    clock.t += POLL
    await cache.get(ALICE)  # this check hangs
    await _settle()
    store.change(ALICE, active=False)
    clock.t += POLL
    await cache.get(ALICE)  # the next one starts anyway, sees the change and reloads
    await _settle()
    clock.t += TTL - POLL  # past the hung check's bound, within the second one's
    row = await cache.get(ALICE)
    assert row is not None and not row.active
    hung.set()  # the hung check ends late and changes nothing
    await _settle()
    row = await cache.get(ALICE)
    assert row is not None and not row.active

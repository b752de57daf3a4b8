"""``skybook relay``: publishes the outbox to the brokers, at least once, in commit order.

Each broker is a destination with its own pending marker (``stream_sent_at`` for Kafka,
``tasks_sent_at`` for RabbitMQ) and its own loop, so one broker being down delays only its own
messages. A row is marked only after the broker confirmed it; a crash in between publishes it
again (consumers drop the duplicate through the inbox).

Order: rows are read by ``position``. Two transactions touching one aggregate are serialised by
its row lock, and the outbox insert happens at commit, so the later one always gets the higher
position: per aggregate, position order is commit order. A publish failure marks only the rows
before the first unconfirmed one, so nothing is ever published ahead of an earlier event.

Wake-ups: the outbox trigger NOTIFYs only while the leader waits for work (it holds the advisory
lock ``RELAY_IDLE_LOCK_KEY`` then; migration 0009). PostgreSQL commits notifying transactions one
at a time, so a NOTIFY from every writer while the relay is busy, or while no relay runs, would
serialise every commit for nothing. A loop that has caught up takes the lock, which waits for the
writers that skipped their NOTIFY to commit, reads the outbox once more, and only then sleeps; it
is released when every loop has fallen behind (full batches), when nothing needs waking.

While events flow the leader does not wait for NOTIFYs at all: after a round that published
something it reads again ``linger`` later (2 ms by default), and from the second such round in a
row it lets the idle lock go, so writers stop notifying. A NOTIFY costs every writer's commit
its turn through PostgreSQL's notification lock, and the relay a wake-up and a round per commit:
at 1,000 events/s in ``bench/events.py`` every event was a NOTIFY, and 71 % of the rounds to
RabbitMQ carried one to three events. The first round that finds nothing takes the lock back
(and reads once more) before the loop sleeps, so a quiet outbox is still woken by the next commit.

Marks ride on the next read: on PostgreSQL the leader marks the rows of a round in the statement
that reads the next round's rows (``_MARK_AND_PENDING_SQL``), which leaves them out of what it
reads; a loop with nothing more to read marks them alone after ``MARK_DELAY_S``. At a steady
trickle, when every event is a round of its own, that is one round trip per round instead of two,
and the next event no longer waits behind the previous one's mark. A relay that dies with marks
still held publishes those rows again once a relay leads (at least once, as for a crash between
publish and mark).

Several relays: on PostgreSQL they elect a leader with an advisory lock held on the connection
that also LISTENs for the outbox trigger's NOTIFY; the others wait and take over within a poll
interval when the leader dies (its session ends, the lock goes with it). We chose a single
leader over ``FOR UPDATE SKIP LOCKED`` workers because it keeps the global position order
without per-aggregate partitioning, and one relay publishes faster than the brokers need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from skybook.platform.clock import Clock
from skybook.platform.messaging import Publisher, PublishFailed
from skybook.platform.messaging.metrics import OUTBOX_BACKLOG, RELAY_FAILURES, RELAY_LEADER, RELAY_PUBLISHED
from skybook.platform.outbox import event_from_row, outbox

log = logging.getLogger("skybook.relay")

NOTIFY_CHANNEL = "skybook_outbox"
LEADER_LOCK_KEY = 0x5B0_0C_7E1A  # pg advisory lock id of "the relay"
# Held (exclusive) by the leader while it waits for a NOTIFY; the outbox trigger tries it shared.
RELAY_IDLE_LOCK_KEY = 0x5B0_0C_7E1B
# How long taking the idle lock may wait for writers still in their transactions before the loop
# reads the outbox again instead (the other loop shares the session meanwhile).
IDLE_LOCK_WAIT_S = 0.1
# How long a loop with nothing to read keeps the marks of its last round before writing them alone.
MARK_DELAY_S = 0.05


@dataclass(frozen=True, slots=True)
class RelayOptions:
    batch_size: int = 500
    poll_interval: float = 1.0
    linger: float = 0.002
    """While events flow, how long the leader waits before reading again (instead of for a NOTIFY);
    0: a round per NOTIFY."""
    max_backoff: float = 2.0
    crash_after_publish: bool = False


class Relay:
    """Leader election, wake-ups and one publishing loop per broker."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        publishers: Sequence[Publisher],
        options: RelayOptions | None = None,
        *,
        listen_url: str | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._publishers = list(publishers)
        self._options = options or RelayOptions()
        self._listen_url = listen_url
        self._wakes = {p.destination: asyncio.Event() for p in self._publishers}
        self._stop = asyncio.Event()
        self._backlog_checked = 0.0
        self._queries: dict[tuple[str, str], sa.Select[Any] | sa.Update] = {}
        self._session: _Session | None = None
        # Destinations whose loop has caught up (their last batch was not full).
        self._caught_up: set[str] = set()
        # Bumped each time the idle lock is taken: a read that began before it may have missed
        # rows whose writers did not notify.
        self._idle_generation = 0
        # Per destination: positions published and confirmed, not yet marked, and when confirmed.
        self._unmarked: dict[str, tuple[list[int], datetime]] = {}

    def stop(self) -> None:
        self._stop.set()
        self._wake_all()

    def _wake_all(self, *_: object) -> None:
        for wake in self._wakes.values():
            wake.set()

    async def run(self) -> None:
        """Publish until stopped; on PostgreSQL only while holding the leader lock."""
        try:
            if self._listen_url is None:
                await self._pump_all()
                return
            while not self._stop.is_set():
                try:
                    await self._lead()
                except Exception:
                    log.exception("relay lost its database session; trying again")
                    RELAY_LEADER.set(0)
                    await self._sleep(self._options.poll_interval)
        finally:
            for publisher in self._publishers:
                await publisher.close()

    async def _lead(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        assert self._listen_url is not None
        conn = await asyncpg.connect(self._listen_url, timeout=10)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            logged = False
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK_KEY):
                if not logged:
                    log.info("another relay is the leader; standing by")
                    logged = True
                if await self._sleep(self._options.poll_interval):
                    return
            log.info("relay is the leader")
            RELAY_LEADER.set(1)
            await conn.add_listener(NOTIFY_CHANNEL, self._wake_all)
            # The leader's own session also reads and marks the outbox: two prepared statements on
            # a connection that is already open cost a fraction of a pooled SQLAlchemy round, which
            # matters because at a steady trickle every NOTIFY is a round of its own.
            # A mark need not wait for its WAL flush: a mark lost in a database crash only makes
            # the relay publish those rows again, which at-least-once delivery allows (the inbox
            # drops the duplicates), and each round no longer waits for a disk flush.
            await conn.execute("SET synchronous_commit TO off")
            # Plan the read and the mark for the outbox as it is at each round. PostgreSQL caches a
            # generic plan for a prepared statement after five runs and keeps it until the table
            # is next analyzed; chosen while the outbox was small (a fresh or quiet database, before
            # autovacuum caught up with a burst), the mark scanned the whole table on every round
            # instead of looking up its primary key: 3,508 sequential scans reading 18.3 million
            # rows in one bench/events.py run, and about a quarter less throughput. Planning two
            # statements per round costs far less.
            await conn.execute("SET plan_cache_mode TO force_custom_plan")
            self._session = _Session(conn)
            self._caught_up.clear()
            self._unmarked.clear()
            pumps = asyncio.ensure_future(self._pump_all())
            stop = asyncio.ensure_future(self._stop.wait())
            gone = asyncio.ensure_future(lost.wait())
            await asyncio.wait({pumps, stop, gone}, return_when=asyncio.FIRST_COMPLETED)
            for task in (pumps, stop, gone):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumps
            if not lost.is_set():
                # Leaving (stopped): write the marks still held, so a next relay need not publish
                # those rows again.
                with contextlib.suppress(Exception):
                    for destination, (positions, at) in self._unmarked.items():
                        await self._session.mark(destination, positions, at)
                self._unmarked.clear()
            if pumps.done() and not pumps.cancelled() and pumps.exception() is not None:
                raise pumps.exception()  # type: ignore[misc]
        finally:
            self._session = None
            RELAY_LEADER.set(0)
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)

    async def _pump_all(self) -> None:
        await asyncio.gather(*(self._pump(p) for p in self._publishers))

    async def _pump(self, publisher: Publisher) -> None:
        wake = self._wakes[publisher.destination]
        backoff = 0.0
        flowing = False  # the last round published something and this loop lingered after it
        while not self._stop.is_set():
            wake.clear()
            generation = self._idle_generation
            try:
                taken = await self.publish_batch(publisher)
                backoff = 0.0
            except Exception as exc:
                RELAY_FAILURES.labels(publisher.destination).inc()
                backoff = min(max(backoff * 2, 0.2), self._options.max_backoff)
                log.warning("publishing to %s failed (%s); retrying in %.1fs", publisher.destination, exc, backoff)
                await self._update_backlog(publisher.destination, force=True)
                if await self._sleep(backoff):
                    return
                continue
            if taken >= self._options.batch_size:
                await self._reads_unwoken(publisher.destination)
                continue  # more is waiting: no need to be woken
            if taken and self._session is not None and self._options.linger > 0:
                # Events are flowing: read again shortly, woken or not. From the second round in a
                # row, writers need not NOTIFY (a single event keeps the lock and its wake-ups).
                if flowing:
                    await self._reads_unwoken(publisher.destination)
                flowing = True
                # A plain sleep (at most SKYBOOK_RELAY_LINGER_MS's bound, 100 ms): the loop's condition
                # sees a stop after it, and nothing else needs to cut it short.
                await asyncio.sleep(self._options.linger)
                continue
            flowing = False
            if not await self._may_sleep(publisher.destination, generation):
                continue  # read again first: rows committed before the idle lock sent no NOTIFY
            # Marks held: the next round writes them, woken or not.
            timeout = MARK_DELAY_S if publisher.destination in self._unmarked else self._options.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=timeout)

    async def _may_sleep(self, destination: str, read_generation: int) -> bool:
        """A loop caught up: make sure writers will NOTIFY, then say whether it may sleep now."""
        session = self._session
        if session is None:
            return True  # no leader session (SQLite): the in-process wake and the poll interval
        self._caught_up.add(destination)
        if not session.idle_held:
            if not await session.take_idle_lock():
                return False
            self._idle_generation += 1
        return read_generation == self._idle_generation

    async def _reads_unwoken(self, destination: str) -> None:
        """This loop reads again without a wake-up (a full batch, or events flowing); with every loop
        so, stop the NOTIFYs."""
        self._caught_up.discard(destination)
        session = self._session
        if session is not None and not self._caught_up and session.idle_held:
            await session.release_idle_lock()

    async def publish_batch(self, publisher: Publisher) -> int:
        """Publish the oldest pending rows of one destination; returns how many rows were taken."""
        column = outbox.c[f"{publisher.destination}_sent_at"]
        session = self._session
        rows: list[Any]
        if session is not None:
            carried = self._unmarked.pop(publisher.destination, None)
            rows = await session.pending(publisher.destination, self._options.batch_size, carried)
        else:
            async with self._engine.connect() as conn:
                rows = list(
                    await conn.execute(self._pending_query(publisher.destination), {"n": self._options.batch_size})
                )
        if not rows:
            OUTBOX_BACKLOG.labels(publisher.destination).set(0)  # known without counting
            return 0
        wanted: list[Any] = [r for r in rows if publisher.wants(r.type)]
        confirmed = await publisher.publish([event_from_row(r) for r in wanted]) if wanted else 0
        if self._options.crash_after_publish and confirmed:
            log.error("relay_crash_after_publish is set: exiting before marking %d rows sent", confirmed)
            os._exit(70)
        if confirmed < len(wanted):
            first_unconfirmed = wanted[confirmed].position
            done = [r.position for r in rows if r.position < first_unconfirmed]
        else:
            done = [r.position for r in rows]
        if done and session is not None:
            if confirmed == len(wanted):
                self._unmarked[publisher.destination] = (done, self._clock.now())  # the next read marks them
            else:
                await session.mark(publisher.destination, done, self._clock.now())
        elif done:
            async with self._engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # One array parameter: the statement is the same whatever the batch size.
                    await conn.execute(self._mark_query(publisher.destination), {"done": done, "at": self._clock.now()})
                else:
                    await conn.execute(
                        sa.update(outbox).where(outbox.c.position.in_(done)).values({column: self._clock.now()})
                    )
        RELAY_PUBLISHED.labels(publisher.destination).inc(confirmed)
        await self._update_backlog(publisher.destination)
        if confirmed < len(wanted):
            raise PublishFailed(f"{publisher.destination}: {len(wanted) - confirmed} events not confirmed")
        return len(rows)

    def _pending_query(self, destination: str) -> sa.Select[Any]:
        # Built once per destination so SQLAlchemy finds its compiled form by identity, not by
        # rebuilding the statement and recomputing its cache key on every round.
        query = self._queries.get(("pending", destination))
        if query is None:
            column = outbox.c[f"{destination}_sent_at"]
            query = sa.select(outbox).where(column.is_(None)).order_by(outbox.c.position).limit(sa.bindparam("n"))
            self._queries[("pending", destination)] = query
        return query  # type: ignore[return-value]

    def _mark_query(self, destination: str) -> sa.Update:
        query = self._queries.get(("mark", destination))
        if query is None:
            column = outbox.c[f"{destination}_sent_at"]
            positions = sa.bindparam("done", type_=postgresql.ARRAY(sa.BigInteger))
            query = (
                sa.update(outbox)
                .where(outbox.c.position == sa.func.any(positions))
                .values({column: sa.bindparam("at", type_=column.type)})
            )
            self._queries[("mark", destination)] = query
        return query  # type: ignore[return-value]

    async def _update_backlog(self, destination: str, *, force: bool = False) -> None:
        # Counting the pending rows costs a scan of the partial index; once a second is enough.
        now = time.monotonic()
        if not force and now - self._backlog_checked < 1.0:
            return
        self._backlog_checked = now
        async with self._engine.connect() as conn:
            for publisher in self._publishers:
                column = outbox.c[f"{publisher.destination}_sent_at"]
                count = await conn.scalar(sa.select(sa.func.count()).select_from(outbox).where(column.is_(None)))
                OUTBOX_BACKLOG.labels(publisher.destination).set(count or 0)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped first; True when stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        return self._stop.is_set()


@dataclass(slots=True)
class _Row:
    """An outbox row read by the leader's session, with the attributes ``event_from_row`` reads."""

    position: int
    event_id: uuid.UUID
    type: str
    version: int
    occurred_at: datetime
    tenant_id: str | None
    aggregate_id: str
    correlation_id: str | None
    causation_id: str | None
    data: Any


class _Session:
    """The relay leader's asyncpg connection (it holds the leader lock and LISTENs): reads and marks
    the outbox with prepared statements. Both publishing loops share it, one statement at a time."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.idle_held = False
        """Whether this session holds ``RELAY_IDLE_LOCK_KEY`` (writers NOTIFY)."""

    async def take_idle_lock(self) -> bool:
        """Take the idle lock, waiting for writers in flight at most ``IDLE_LOCK_WAIT_S``."""
        async with self._lock:
            if self.idle_held:
                return True
            try:
                await self._conn.fetchval("SELECT pg_advisory_lock($1)", RELAY_IDLE_LOCK_KEY, timeout=IDLE_LOCK_WAIT_S)
            except TimeoutError:
                # asyncpg cancelled the wait; had the lock been granted just before, let it go.
                while await self._conn.fetchval("SELECT pg_advisory_unlock($1)", RELAY_IDLE_LOCK_KEY):
                    pass
                return False
            self.idle_held = True
            return True

    async def release_idle_lock(self) -> None:
        async with self._lock:
            if self.idle_held:
                await self._conn.fetchval("SELECT pg_advisory_unlock($1)", RELAY_IDLE_LOCK_KEY)
                self.idle_held = False

    async def pending(self, destination: str, limit: int, mark: tuple[list[int], datetime] | None = None) -> list[_Row]:
        """The oldest pending rows; with ``mark`` (positions, when confirmed), marks those rows in the
        same statement and leaves them out (its snapshot still sees them pending)."""
        async with self._lock:
            if mark is None:
                records = await self._conn.fetch(_PENDING_SQL[destination], limit)
            else:
                records = await self._conn.fetch(_MARK_AND_PENDING_SQL[destination], limit, *mark)
        return [
            _Row(
                position=r["position"],
                event_id=r["event_id"],
                type=r["type"],
                version=r["version"],
                occurred_at=r["occurred_at"],
                tenant_id=r["tenant_id"],
                aggregate_id=r["aggregate_id"],
                correlation_id=r["correlation_id"],
                causation_id=r["causation_id"],
                data=orjson.loads(r["data"]),  # jsonb arrives as text without a codec
            )
            for r in records
        ]

    async def mark(self, destination: str, positions: list[int], at: datetime) -> None:
        async with self._lock:
            # One statement, so it commits on its own: no BEGIN/COMMIT round trips.
            await self._conn.execute(_MARK_SQL[destination], positions, at)


# Spelled out per destination (the marker column differs), so no SQL is built from a variable.
_PENDING_SQL = {
    "stream": "SELECT position, event_id, type, version, occurred_at, tenant_id, aggregate_id, correlation_id, "
    "causation_id, data FROM outbox WHERE stream_sent_at IS NULL ORDER BY position LIMIT $1",
    "tasks": "SELECT position, event_id, type, version, occurred_at, tenant_id, aggregate_id, correlation_id, "
    "causation_id, data FROM outbox WHERE tasks_sent_at IS NULL ORDER BY position LIMIT $1",
}
_MARK_AND_PENDING_SQL = {
    "stream": "WITH marked AS (UPDATE outbox SET stream_sent_at = $3 WHERE position = ANY($2::bigint[])) "
    "SELECT position, event_id, type, version, occurred_at, tenant_id, aggregate_id, correlation_id, "
    "causation_id, data FROM outbox WHERE stream_sent_at IS NULL AND position <> ALL($2::bigint[]) "
    "ORDER BY position LIMIT $1",
    "tasks": "WITH marked AS (UPDATE outbox SET tasks_sent_at = $3 WHERE position = ANY($2::bigint[])) "
    "SELECT position, event_id, type, version, occurred_at, tenant_id, aggregate_id, correlation_id, "
    "causation_id, data FROM outbox WHERE tasks_sent_at IS NULL AND position <> ALL($2::bigint[]) "
    "ORDER BY position LIMIT $1",
}
_MARK_SQL = {
    "stream": "UPDATE outbox SET stream_sent_at = $2 WHERE position = ANY($1::bigint[])",
    "tasks": "UPDATE outbox SET tasks_sent_at = $2 WHERE position = ANY($1::bigint[])",
}

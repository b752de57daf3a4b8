"""Wake-ups by key across processes: PostgreSQL NOTIFY, sent inside a transaction, heard at commit.

A request that waits for another process's effect (the pay route waiting for the ticketing worker)
would otherwise poll the database. Here it subscribes to a key *before* it reads the state, then
sleeps until the key is announced or its timeout passes, and reads again. The notification is only
a hint: it is delivered after the announcing transaction commits (PostgreSQL holds NOTIFY until
then), it can be lost while the listening connection reconnects, and the waiter always re-reads the
state it waits for, so a lost hint costs one timeout, never a wrong answer.

One LISTEN connection per process serves every waiter; it is opened on first use. On SQLite (one
process, no NOTIFY) :class:`NoSignals` just sleeps, and the waiter's re-read does the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

log = logging.getLogger("skybook.signals")


class Subscription:
    """Wakes when its key is announced; ``wait`` may be called repeatedly."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def _fire(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """True when the key was announced since the last wait, False when ``seconds`` passed first."""
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._event.wait()
        fired = self._event.is_set()
        self._event.clear()
        return fired


class Signals(Protocol):
    """Port: subscribe to keys of one channel and be woken when another transaction announces them."""

    @property
    def live(self) -> bool:
        """Whether announcements can arrive at all (False: waiters must poll)."""
        ...

    def listen(self, key: str) -> contextlib.AbstractContextManager[Subscription]: ...

    async def close(self) -> None: ...


class NoSignals:
    """No cross-transaction wake-ups (SQLite): every wait sleeps its timeout."""

    live = False

    @contextlib.contextmanager
    def listen(self, key: str) -> Iterator[Subscription]:
        yield Subscription()

    async def close(self) -> None:
        return None


class PgSignals:
    """Waiters keyed by NOTIFY payload on one PostgreSQL channel, over one lazily opened connection."""

    def __init__(self, dsn: str, channel: str, *, retry_seconds: float = 5.0) -> None:
        self._dsn = dsn
        self._channel = channel
        self._retry_seconds = retry_seconds
        self._subscribers: dict[str, set[Subscription]] = {}
        self._conn: Any = None
        self._connecting: asyncio.Task[None] | None = None
        self._failed_at = float("-inf")
        self._closed = False

    @property
    def live(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @contextlib.contextmanager
    def listen(self, key: str) -> Iterator[Subscription]:
        self._ensure_connected()
        sub = Subscription()
        self._subscribers.setdefault(key, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subscribers.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[key]

    def _ensure_connected(self) -> None:
        if self._closed or self.live or self._connecting is not None:
            return
        if time.monotonic() - self._failed_at < self._retry_seconds:
            return  # the database refused us a moment ago; waiters poll meanwhile
        self._connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        try:
            conn = await asyncpg.connect(self._dsn, timeout=5)
            await conn.add_listener(self._channel, self._on_notify)
            conn.add_termination_listener(self._on_lost)
            if self._closed:
                await conn.close()
                return
            self._conn = conn
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            self._failed_at = time.monotonic()
            log.warning("cannot LISTEN on %s, waiters fall back to polling: %s", self._channel, exc)
        finally:
            self._connecting = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for sub in self._subscribers.get(payload, ()):
            sub._fire()

    def _on_lost(self, _conn: object) -> None:
        # The next listen() opens a new connection; what was announced meanwhile is caught by the
        # waiters' own re-reads.
        self._conn = None

    async def close(self) -> None:
        self._closed = True
        connecting = self._connecting
        if connecting is not None:
            with contextlib.suppress(Exception):
                await connecting
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

"""Time-based worker jobs: expiring overdue holds and unpaid orders, and the event tables' retention.

Expiry is driven by the clock, not by an event, so no queue message can trigger it on time. The
loop runs in every process that runs workers: the embedded API process (``SKYBOOK_RUN_WORKERS``)
and each ``skybook worker``. Several of them may sweep at once: ``expire_overdue`` takes each
order with ``SELECT ... FOR UPDATE SKIP LOCKED`` and checks it again under the lock, so an order
is expired exactly once and sweepers never queue behind each other (SQLite has a single writer
anyway). Running more sweepers only adds redundancy, which is what keeps expiry going while one
worker restarts.

Retention (``platform.retention``) deletes delivered outbox events and old inbox entries every
``SKYBOOK_RETENTION_INTERVAL_SECONDS``, in small transactions; concurrent rounds in several
workers are harmless.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from skybook.booking import handlers as booking_handlers
from skybook.bootstrap import Container
from skybook.platform.retention import EMBEDDED_MARKERS, Pruned, Retention, prune

log = logging.getLogger("skybook.periodic")


async def sweep_once(container: Container) -> int:
    """One round of hold expiry; returns how many orders expired."""
    expired = 0
    while True:
        n = await booking_handlers.expire_overdue(container, limit=500)
        expired += n
        if n < 500:  # a full batch means more may be due right now
            return expired


async def prune_once(container: Container, markers: Sequence[str] = EMBEDDED_MARKERS) -> Pruned:
    """One round of retention: what the settings say is old enough, with ``markers`` meaning delivered."""
    s = container.settings
    retention = Retention.of(s.outbox_retention_hours, s.inbox_retention_hours, markers)
    return await prune(container.uow, retention, container.clock.now())


async def run_periodic_jobs(container: Container, markers: Sequence[str] = EMBEDDED_MARKERS) -> None:
    """Run the periodic jobs until cancelled; a failed round is logged and retried next time.

    ``markers``: the outbox columns that mean "delivered" in this deployment (the in-process
    dispatcher's by default; ``skybook worker`` passes the relay's, see ``delivery_markers``).
    """
    s = container.settings

    async def sweep() -> None:
        expired = await sweep_once(container)
        if expired:
            log.info("expired %d overdue holds and orders", expired)

    async def retain() -> None:
        pruned = await prune_once(container, markers)
        if pruned.outbox or pruned.inbox:
            log.info("deleted %d outbox events and %d inbox entries past their retention", pruned.outbox, pruned.inbox)

    await asyncio.gather(
        _every(s.hold_sweep_interval_seconds, sweep, "hold sweeper"),
        _every(s.retention_interval_seconds, retain, "retention"),
    )


async def _every(interval: float, job: Callable[[], Awaitable[None]], name: str) -> None:
    while True:
        try:
            await job()
        except Exception:
            log.exception("%s round failed", name)
        # A little jitter keeps several workers from running in lock-step.
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))  # noqa: S311 - not security relevant

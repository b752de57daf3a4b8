"""Time-based worker jobs: today, expiring overdue holds and unpaid orders.

Expiry is driven by the clock, not by an event, so no queue message can trigger it on time. The
loop runs in every process that runs workers: the embedded API process (``SKYBOOK_RUN_WORKERS``)
and each ``skybook worker``. Several of them may sweep at once: ``expire_overdue`` takes each
order with ``SELECT ... FOR UPDATE SKIP LOCKED`` and checks it again under the lock, so an order
is expired exactly once and sweepers never queue behind each other (SQLite has a single writer
anyway). Running more sweepers only adds redundancy, which is what keeps expiry going while one
worker restarts.
"""

from __future__ import annotations

import asyncio
import logging
import random

from skybook.booking import handlers as booking_handlers
from skybook.bootstrap import Container

log = logging.getLogger("skybook.periodic")


async def sweep_once(container: Container) -> int:
    """One round of hold expiry; returns how many orders expired."""
    expired = 0
    while True:
        n = await booking_handlers.expire_overdue(container, limit=500)
        expired += n
        if n < 500:  # a full batch means more may be due right now
            return expired


async def run_periodic_jobs(container: Container) -> None:
    """Run the periodic jobs until cancelled; a failed round is logged and retried next time."""
    interval = container.settings.hold_sweep_interval_seconds
    while True:
        try:
            expired = await sweep_once(container)
            if expired:
                log.info("expired %d overdue holds and orders", expired)
        except Exception:
            log.exception("hold sweeper round failed")
        # A little jitter keeps several workers from sweeping in lock-step.
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))  # noqa: S311 - not security relevant

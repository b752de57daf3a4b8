"""Seat-count invariants checked after every test that touches a database.

The logic is the audit's (``skybook.ops.audit.seats_conserved``): tests and ``skybook audit``
share one implementation.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from skybook.ops.audit import seats_conserved


async def check_seat_invariants(engine: AsyncEngine) -> list[str]:
    """Problems found; empty when every cabin and class is consistent."""
    async with engine.connect() as conn:
        result = await seats_conserved(conn)
    return [", ".join(f"{k}={v}" for k, v in row.items()) for row in result.failures]

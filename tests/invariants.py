"""Seat-count invariants checked after every test that touches a database."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from skybook.booking.tables import order_segments, orders
from skybook.inventory.tables import booking_classes, flight_cabins


async def check_seat_invariants(engine: AsyncEngine) -> list[str]:
    """Problems found; empty when every cabin and class is consistent.

    For every cabin and booking class: held and sold are not negative, held + sold stays within
    capacity + authorised overbooking (cabins) and equals the seats of live / ticketed orders.
    """
    problems: list[str] = []
    async with engine.connect() as conn:
        expected_held: dict[object, int] = defaultdict(int)
        expected_sold: dict[object, int] = defaultdict(int)
        class_held: dict[object, int] = defaultdict(int)
        class_sold: dict[object, int] = defaultdict(int)
        rows = await conn.execute(
            sa.select(
                order_segments.c.cabin_id, order_segments.c.booking_class_id, order_segments.c.seats, orders.c.status
            ).join(orders, orders.c.id == order_segments.c.order_id)
        )
        for r in rows:
            if r.status in ("held", "confirmed"):
                expected_held[r.cabin_id] += r.seats
                class_held[r.booking_class_id] += r.seats
            elif r.status == "ticketed":
                expected_sold[r.cabin_id] += r.seats
                class_sold[r.booking_class_id] += r.seats
        for c in await conn.execute(sa.select(flight_cabins)):
            available = c.capacity + c.overbooking_limit - c.held - c.sold
            if c.held < 0 or c.sold < 0 or available < 0:
                problems.append(f"cabin {c.id}: held={c.held} sold={c.sold} available={available}")
            if c.held != expected_held[c.id] or c.sold != expected_sold[c.id]:
                problems.append(
                    f"cabin {c.id}: counts held={c.held} sold={c.sold} but orders say "
                    f"held={expected_held[c.id]} sold={expected_sold[c.id]}"
                )
        for b in await conn.execute(sa.select(booking_classes)):
            if b.held != class_held[b.id] or b.sold != class_sold[b.id] or b.held < 0 or b.sold < 0:
                problems.append(
                    f"class {b.code} {b.id}: held={b.held} sold={b.sold} but orders say "
                    f"held={class_held[b.id]} sold={class_sold[b.id]}"
                )
    return problems

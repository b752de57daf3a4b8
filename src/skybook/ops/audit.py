"""Consistency audit over a whole Skybook database (``skybook audit``).

Each check states one invariant that must hold after every committed transaction and every
drained event, reads the whole database, and reports the rows that break it. The same checks
run after every database test (``tests/invariants.py``) and after each scorecard load run, where
the share of checks that hold is the published consistency figure.

The checks:

* ``seats_conserved`` - every cabin and booking class: held and sold are not negative, a cabin
  holds and sells no more than capacity + authorised overbooking, and its counters equal the
  seats of its live (held) and ticketed (sold) orders.
* ``tickets_match_orders`` - a ticketed order has exactly one issued ticket per passenger; an
  order never ticketed has no ticket; a ticketed then cancelled order has no ticket still issued.
* ``outbox_delivered`` - every outbox event was delivered (no backlog, nothing given up): by the
  in-process dispatcher (``dispatched_at``) or, scaled out, to every broker the relay publishes to.
* ``consumer_effects_once`` - every dispatched event a consumer subscribes to was handled by that
  consumer exactly once (one inbox row: the inbox key makes a second impossible, a missing one is
  a lost effect); no inbox row names an event the outbox does not have. With a retention
  (``platform.retention``), events delivered and entries handled before ``since`` are left out:
  their partners may have been deleted already.
* ``payments_balance`` - per order, captured payments minus refunds equal the fares of its issued
  tickets (an unpaid order nets zero).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from skybook.booking.tables import order_segments, orders, passengers, tickets
from skybook.inventory.tables import booking_classes, flight_cabins
from skybook.payments.tables import payments, refunds
from skybook.platform.outbox import inbox, outbox
from skybook.platform.retention import EMBEDDED_MARKERS

RETENTION_MARGIN = timedelta(hours=1)
"""How much of the outbox retention the audit leaves out next to its cut-off (see :func:`audit_since`):
a consumer may handle an event a little before the relay marks it delivered."""

MAX_ROWS = 50
"""Failing rows listed per check (the count is always complete)."""

# A payment whose money moved: it was captured, perhaps later refunded or voided.
_SETTLED_PAYMENTS = ("captured", "refunded", "voided")


@dataclass
class CheckResult:
    """The outcome of one check: how many things it looked at and which of them are wrong."""

    name: str
    description: str
    checked: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self, max_rows: int = MAX_ROWS) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "passed": self.passed,
            "checked": self.checked,
            "failure_count": len(self.failures),
            "failures": [_jsonable(f) for f in self.failures[:max_rows]],
        }


@dataclass(frozen=True)
class Subscription:
    """A consumer and the event types it handles (from ``Container.consumers()``)."""

    name: str
    event_types: frozenset[str]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        out[k] = str(v) if isinstance(v, uuid.UUID | datetime | date) else v
    return out


async def seats_conserved(conn: AsyncConnection) -> CheckResult:
    """Seat counters of every cabin and class against capacity and against their orders."""
    result = CheckResult(
        "seats_conserved",
        "every cabin/class: held, sold >= 0; cabin held + sold <= capacity + overbooking; "
        "held = seats of held/confirmed orders, sold = seats of ticketed orders",
    )
    seg = order_segments.c
    live = sa.case((orders.c.status.in_(["held", "confirmed"]), seg.seats), else_=0)
    sold = sa.case((orders.c.status == "ticketed", seg.seats), else_=0)
    joined = order_segments.join(orders, orders.c.id == seg.order_id)
    cabin_expected = {
        r.cabin_id: (int(r.held), int(r.sold))
        for r in await conn.execute(
            sa.select(seg.cabin_id, sa.func.sum(live).label("held"), sa.func.sum(sold).label("sold"))
            .select_from(joined)
            .group_by(seg.cabin_id)
        )
    }
    class_expected = {
        r.booking_class_id: (int(r.held), int(r.sold))
        for r in await conn.execute(
            sa.select(seg.booking_class_id, sa.func.sum(live).label("held"), sa.func.sum(sold).label("sold"))
            .select_from(joined)
            .group_by(seg.booking_class_id)
        )
    }
    for c in await conn.execute(sa.select(flight_cabins)):
        result.checked += 1
        held, sold_ = cabin_expected.get(c.id, (0, 0))
        available = c.capacity + c.overbooking_limit - c.held - c.sold
        if c.held < 0 or c.sold < 0 or available < 0 or (c.held, c.sold) != (held, sold_):
            result.failures.append(
                {
                    "kind": "cabin",
                    "id": c.id,
                    "flight_id": c.flight_id,
                    "cabin": c.cabin_code,
                    "capacity": c.capacity,
                    "overbooking_limit": c.overbooking_limit,
                    "held": c.held,
                    "sold": c.sold,
                    "orders_held": held,
                    "orders_sold": sold_,
                }
            )
    for b in await conn.execute(sa.select(booking_classes)):
        result.checked += 1
        held, sold_ = class_expected.get(b.id, (0, 0))
        if b.held < 0 or b.sold < 0 or (b.held, b.sold) != (held, sold_):
            result.failures.append(
                {
                    "kind": "booking_class",
                    "id": b.id,
                    "flight_id": b.flight_id,
                    "booking_class": b.code,
                    "held": b.held,
                    "sold": b.sold,
                    "orders_held": held,
                    "orders_sold": sold_,
                }
            )
    return result


async def tickets_match_orders(conn: AsyncConnection) -> CheckResult:
    """One issued ticket per passenger of a ticketed order; none for orders never (or no longer) sold."""
    result = CheckResult(
        "tickets_match_orders",
        "ticketed order: exactly one issued ticket per passenger; never-ticketed order: no ticket; "
        "cancelled after ticketing: no ticket still issued",
    )
    t = tickets.c
    per_passenger = (
        sa.select(
            t.passenger_id,
            sa.func.count().label("tickets"),
            sa.func.sum(sa.case((t.status == "issued", 1), else_=0)).label("issued"),
        )
        .group_by(t.passenger_id)
        .subquery()
    )
    rows = await conn.execute(
        sa.select(
            passengers.c.id.label("passenger_id"),
            orders.c.id.label("order_id"),
            orders.c.status,
            orders.c.ticketed_at,
            sa.func.coalesce(per_passenger.c.tickets, 0).label("tickets"),
            sa.func.coalesce(per_passenger.c.issued, 0).label("issued"),
        )
        .select_from(passengers.join(orders, orders.c.id == passengers.c.order_id))
        .outerjoin(per_passenger, per_passenger.c.passenger_id == passengers.c.id)
    )
    for r in rows:
        result.checked += 1
        if r.status == "ticketed":
            ok = r.tickets == 1 and r.issued == 1
        elif r.ticketed_at is None:
            ok = r.tickets == 0
        else:  # sold, then cancelled: the ticket stays, voided or refunded
            ok = r.tickets == 1 and r.issued == 0
        if not ok:
            result.failures.append(
                {
                    "order_id": r.order_id,
                    "passenger_id": r.passenger_id,
                    "order_status": r.status,
                    "tickets": int(r.tickets),
                    "issued": int(r.issued),
                }
            )
    # A ticket whose passenger belongs to another order is wrong whatever the counts say.
    for stray in await conn.execute(
        sa.select(t.number, t.order_id, passengers.c.order_id.label("passenger_order"))
        .join(passengers, passengers.c.id == t.passenger_id)
        .where(passengers.c.order_id != t.order_id)
    ):
        result.failures.append(
            {"ticket": stray.number, "order_id": stray.order_id, "passenger_order_id": stray.passenger_order}
        )
    return result


def audit_since(now: datetime, outbox_retention: timedelta | None) -> datetime | None:
    """Where the audit of events starts, given the outbox retention: the oldest deliveries and
    inbox entries may be missing their partners, which retention deleted first."""
    return None if outbox_retention is None else now - outbox_retention + RETENTION_MARGIN


def _delivered(markers: Sequence[str]) -> sa.ColumnElement[bool]:
    """An outbox row counts as delivered when every given marker column is set."""
    return sa.and_(*(outbox.c[m].is_not(None) for m in markers))


async def outbox_delivered(conn: AsyncConnection, markers: Sequence[str] = EMBEDDED_MARKERS) -> CheckResult:
    """No event is left undelivered in the outbox."""
    result = CheckResult("outbox_delivered", f"every outbox event has been delivered ({' and '.join(markers)} set)")
    o = outbox.c
    result.checked = int(await conn.scalar(sa.select(sa.func.count()).select_from(outbox)) or 0)
    for r in await conn.execute(
        sa.select(o.position, o.event_id, o.type, o.occurred_at, o.attempts, o.last_error)
        .where(sa.not_(_delivered(markers)))
        .order_by(o.position)
    ):
        result.failures.append(dict(r._mapping))
    return result


async def consumer_effects_once(
    conn: AsyncConnection,
    consumers: Iterable[Subscription],
    markers: Sequence[str] = EMBEDDED_MARKERS,
    since: datetime | None = None,
) -> CheckResult:
    """Every dispatched event handled once by each consumer subscribed to it; no stray inbox rows."""
    result = CheckResult(
        "consumer_effects_once",
        "each dispatched event has exactly one inbox row per subscribed consumer; every inbox row names an "
        "outbox event",
    )
    by_type: dict[str, list[str]] = defaultdict(list)
    for sub in consumers:
        for event_type in sub.event_types:
            by_type[event_type].append(sub.name)
    o = outbox.c
    handled: dict[tuple[str, uuid.UUID], int] = defaultdict(int)
    for entry in await conn.execute(sa.select(inbox.c.consumer, inbox.c.event_id)):
        handled[(entry.consumer, entry.event_id)] += 1
    delivered = _delivered(markers)
    if since is not None:
        delivered = sa.and_(delivered, *(o[m] >= since for m in markers))
    known: set[uuid.UUID] = set()
    if by_type:
        for r in await conn.execute(sa.select(o.event_id, o.type).where(o.type.in_(list(by_type)), delivered)):
            known.add(r.event_id)
            for name in by_type[r.type]:
                result.checked += 1
                count = handled.get((name, r.event_id), 0)
                if count != 1:
                    result.failures.append(
                        {"consumer": name, "event_id": r.event_id, "event_type": r.type, "handled": count}
                    )
    # Entries handled since ``since`` must name a kept event. An anti-join, not the ids as parameters:
    # a busy week's inbox holds more entries than one statement may carry (32,767 on asyncpg).
    strays = (
        sa.select(inbox.c.consumer, inbox.c.event_id)
        .distinct()
        .select_from(inbox.outerjoin(outbox, o.event_id == inbox.c.event_id))
        .where(o.event_id.is_(None))
    )
    if since is not None:
        strays = strays.where(inbox.c.handled_at >= since)
    for r in await conn.execute(strays.order_by(inbox.c.consumer, inbox.c.event_id)):
        count = handled[(r.consumer, r.event_id)]
        result.failures.append({"consumer": r.consumer, "event_id": r.event_id, "event_type": None, "handled": count})
    return result


async def payments_balance(conn: AsyncConnection) -> CheckResult:
    """Money taken minus money returned equals the fares of the tickets still issued, per order."""
    result = CheckResult(
        "payments_balance",
        "per order: captured payments - refunds = amounts of its issued tickets",
    )
    paid: dict[uuid.UUID, int] = defaultdict(int)
    for r in await conn.execute(
        sa.select(payments.c.order_id, sa.func.sum(payments.c.amount).label("amount"))
        .where(payments.c.status.in_(_SETTLED_PAYMENTS))
        .group_by(payments.c.order_id)
    ):
        paid[r.order_id] += int(r.amount)
    refunded: dict[uuid.UUID, int] = defaultdict(int)
    for r in await conn.execute(
        sa.select(payments.c.order_id, sa.func.sum(refunds.c.amount).label("amount"))
        .join(payments, payments.c.id == refunds.c.payment_id)
        .group_by(payments.c.order_id)
    ):
        refunded[r.order_id] += int(r.amount)
    ticketed: dict[uuid.UUID, int] = defaultdict(int)
    for r in await conn.execute(
        sa.select(tickets.c.order_id, sa.func.sum(tickets.c.amount).label("amount"))
        .where(tickets.c.status == "issued")
        .group_by(tickets.c.order_id)
    ):
        ticketed[r.order_id] += int(r.amount)
    for order_id in sorted(set(paid) | set(refunded) | set(ticketed)):
        result.checked += 1
        net = paid[order_id] - refunded[order_id]
        if net != ticketed[order_id]:
            result.failures.append(
                {
                    "order_id": order_id,
                    "captured": paid[order_id],
                    "refunded": refunded[order_id],
                    "issued_tickets": ticketed[order_id],
                }
            )
    return result


Check = Callable[[AsyncConnection], Awaitable[CheckResult]]


async def run_audit(
    engine: AsyncEngine,
    consumers: Iterable[Subscription] = (),
    markers: Sequence[str] = EMBEDDED_MARKERS,
    since: datetime | None = None,
) -> list[CheckResult]:
    """Every check, in one read-only pass (one REPEATABLE READ snapshot on PostgreSQL).

    ``markers`` name the outbox columns that mean "delivered": ``dispatched_at`` for the embedded
    dispatcher, the relay's per-broker columns for a scaled-out deployment (``delivery_markers``).
    ``since``: with a retention, where the check of consumer effects starts (:func:`audit_since`).
    """
    subs = list(consumers)
    checks: list[Check] = [
        seats_conserved,
        tickets_match_orders,
        lambda conn: outbox_delivered(conn, markers),
        lambda conn: consumer_effects_once(conn, subs, markers, since),
        payments_balance,
    ]
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One consistent snapshot for all checks, even while traffic continues.
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            return [await check(conn) for check in checks]


def report(results: list[CheckResult], max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """The audit as a JSON-ready document: each check and the share of checks that hold."""
    passed = sum(r.passed for r in results)
    return {
        "checks": [r.as_dict(max_rows) for r in results],
        "passed": passed,
        "total": len(results),
        "consistency": passed / len(results) if results else 1.0,
    }

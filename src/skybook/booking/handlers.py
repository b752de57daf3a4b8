"""Booking use cases: hold, release, confirm, pay and ticket, assign seats, cancel, expire.

Each handler takes a command and the dependencies it needs; seat counts change only through
``skybook.inventory`` inside the same transaction that changes the order. No transaction is
held open across a call to the payment provider.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from skybook import inventory
from skybook.booking import repository as repo
from skybook.booking.commands import (
    AssignSeats,
    CancelOrder,
    ConfirmOrder,
    HoldSeats,
    PayOrder,
    ReleaseHold,
    SegmentChoice,
)
from skybook.booking.model import (
    OrderStatus,
    PartySize,
    PassengerType,
    check_passengers,
    name_key,
    require_status,
)
from skybook.booking.tables import (
    order_segments,
    orders,
    passengers,
    seat_assignments,
    ticket_coupons,
    tickets,
)
from skybook.payments import Outcome, PaymentProvider, payments, refunds
from skybook.platform.clock import Clock
from skybook.platform.errors import (
    AlreadyPaid,
    DomainError,
    HoldExpired,
    HoldLimitReached,
    InvalidRequest,
    InvalidState,
    PaymentDeclined,
    PaymentInProgress,
    PaymentProviderError,
    SeatUnavailable,
    SoldOut,
)
from skybook.platform.events import Event, uuid7
from skybook.platform.outbox import outbox_rows
from skybook.platform.pgraw import StatementRefused
from skybook.platform.security import Principal
from skybook.platform.uow import UnitOfWork, stamped

LIVE = (OrderStatus.HELD, OrderStatus.CONFIRMED)
# A payment left pending this long (its process died mid-call) no longer shields the order from expiry.
STALE_PAYMENT = timedelta(minutes=5)


class BookingDeps(Protocol):
    """What the booking handlers need from the composition root."""

    @property
    def clock(self) -> Clock: ...
    @property
    def payments(self) -> PaymentProvider: ...
    @property
    def hold_ttl(self) -> timedelta: ...
    @property
    def max_passengers(self) -> int: ...
    @property
    def accounting_code(self) -> str: ...

    def uow(self, *, raw: bool = False) -> UnitOfWork: ...


@dataclass(frozen=True, slots=True)
class HeldOrder:
    """What a new hold committed: enough to describe it without reading it back."""

    id: uuid.UUID
    party: PartySize
    total_amount: int
    currency: str
    expires_at: datetime
    created_at: datetime
    segments: tuple[inventory.TakenSeats, ...]


def _inventory_changed(flight_ids: Sequence[uuid.UUID], reason: str, order_id: uuid.UUID) -> Event:
    ids = sorted({str(f) for f in flight_ids})
    return Event(
        type="inventory.changed",
        aggregate_id=ids[0],
        data={"flight_ids": ids, "reason": reason, "order_id": str(order_id)},
    )


async def hold_seats(cmd: HoldSeats, deps: BookingDeps) -> HeldOrder:
    """Take the seats of every segment at once, or none of them."""
    cmd.party.check(max_passengers=deps.max_passengers)
    if not 1 <= len(cmd.segments) <= 4:
        raise InvalidRequest("a hold has 1 to 4 segments")
    if len({s.flight_id for s in cmd.segments}) != len(cmd.segments):
        raise InvalidRequest("each flight may appear only once in a hold")
    now = deps.clock.now()
    order_id = uuid7()
    seats = cmd.party.seats
    actor = cmd.actor
    # The busiest write of the platform: a raw unit of work (asyncpg directly on PostgreSQL).
    async with deps.uow(raw=True) as uow:
        if len(cmd.segments) == 1 and uow.dialect_name == "postgresql":
            return await _hold_in_one_statement(cmd, deps, uow, order_id=order_id, now=now)
        taken: dict[uuid.UUID, inventory.TakenSeats] = {}
        # Sorted, so concurrent multi-segment holds lock counters in one global order.
        for i, seg in enumerate(sorted(cmd.segments, key=lambda s: (str(s.flight_id), s.booking_class))):
            # OWASP API6: one principal cannot sit on unlimited unpaid seats. Checked by the first
            # segment's seat-taking statement itself (no round trip of its own), counted without a
            # lock, so concurrent holds of one principal may pass the cap by their own number at most.
            guarded = actor is not None and i == 0
            try:
                taken[seg.flight_id] = await inventory.take_seats(
                    uow,
                    flight_id=seg.flight_id,
                    booking_class=seg.booking_class,
                    seats=seats,
                    now=now,
                    guard=repo.UNPAID_CAP_GUARD if guarded else None,
                    guard_params=repo.unpaid_cap_params(actor.id, cap=actor.max_unpaid_seats)
                    if actor is not None and guarded
                    else None,
                )
            except DomainError:
                if actor is not None and guarded:
                    await _check_unpaid_cap(uow, actor, seats)
                raise
        itinerary = [taken[s.flight_id] for s in cmd.segments]
        for earlier, later in pairwise(itinerary):
            if later.departure_at <= earlier.arrival_at:
                raise InvalidRequest("segments must be in travel order, each departing after the one before lands")
        currencies = {t.currency for t in itinerary}
        if len(currencies) != 1:
            raise InvalidRequest("all segments of a hold must be priced in one currency")
        total = sum(cmd.party.price(t.fare_amount) for t in itinerary)
        expires_at = now + deps.hold_ttl
        order_row = {
            "id": order_id,
            "status": OrderStatus.HELD,
            "tenant_id": actor.tenant_id if actor else None,
            "created_by": actor.id if actor else None,
            "adults": cmd.party.adults,
            "children": cmd.party.children,
            "infants": cmd.party.infants,
            "total_amount": total,
            "currency": itinerary[0].currency,
            "expires_at": expires_at,
            "created_at": now,
        }
        segment_rows = [
            {
                "order_id": order_id,
                "segment_no": i,
                "flight_id": t.flight_id,
                "booking_class": t.booking_class,
                "booking_class_id": t.booking_class_id,
                "cabin": t.cabin,
                "cabin_id": t.cabin_id,
                "seats": seats,
                "fare_amount": t.fare_amount,
                "currency": t.currency,
            }
            for i, t in enumerate(itinerary, start=1)
        ]
        created = _hold_created(order_id, actor, expires_at, seats, itinerary)
        created.data["total"] = {"amount": total, "currency": itinerary[0].currency}
        uow.emit(
            created,
            _inventory_changed(list(taken), "hold", order_id),
        )
        # The order, its segments and its events in one statement on PostgreSQL (one round trip).
        await uow.commit(inserts=[(orders, [order_row]), (order_segments, segment_rows)])
    return HeldOrder(
        id=order_id,
        party=cmd.party,
        total_amount=total,
        currency=itinerary[0].currency,
        expires_at=expires_at,
        created_at=now,
        segments=tuple(itinerary),
    )


def _hold_created(
    order_id: uuid.UUID,
    actor: Principal | None,
    expires_at: datetime,
    seats: int,
    segments: Sequence[SegmentChoice | inventory.TakenSeats],
) -> Event:
    """``hold.created`` without its ``total`` (each path adds the total it priced)."""
    return Event(
        type="hold.created",
        aggregate_id=str(order_id),
        tenant_id=str(actor.tenant_id) if actor else None,
        data={
            "order_id": str(order_id),
            "expires_at": expires_at.isoformat(),
            "seats": seats,
            "segments": [{"flight_id": str(s.flight_id), "booking_class": s.booking_class} for s in segments],
        },
    )


async def _check_unpaid_cap(uow: UnitOfWork, actor: Principal, seats: int) -> None:
    """After a refusal: was it the principal's cap? The cap answers first, as it always has."""
    unpaid = await repo.unpaid_seats_of(uow, actor.id, cap=actor.max_unpaid_seats)
    if unpaid + seats > actor.max_unpaid_seats:
        raise HoldLimitReached(
            f"you hold {unpaid} unpaid seats; your plan allows {actor.max_unpaid_seats}. "
            "Pay, release or let some holds expire first.",
            limit=actor.max_unpaid_seats,
        )


async def _hold_in_one_statement(
    cmd: HoldSeats, deps: BookingDeps, uow: UnitOfWork, *, order_id: uuid.UUID, now: datetime
) -> HeldOrder:
    """A single-segment hold on PostgreSQL: one statement, its own transaction, one round trip
    (``repository.one_statement_hold``). Same rules, same answers as the general path below."""
    seg = cmd.segments[0]
    actor = cmd.actor
    party = cmd.party
    expires_at = now + deps.hold_ttl
    # hold.created's data as the general path writes it; the statement adds the total it prices.
    hold_created = _hold_created(order_id, actor, expires_at, party.seats, cmd.segments)
    events = stamped(hold_created, _inventory_changed([seg.flight_id], "hold", order_id))
    params: dict[str, Any] = {
        "fid": seg.flight_id,
        "p_code": seg.booking_class,
        "n": party.seats,
        "now": now,
        "order_id": order_id,
        "tenant_id": actor.tenant_id if actor else None,
        "created_by": actor.id if actor else None,
        "adults": party.adults,
        "children": party.children,
        "infants": party.infants,
        "expires_at": expires_at,
        "created_at": now,
    }
    if actor is not None:
        params.update(repo.unpaid_cap_params(actor.id, cap=actor.max_unpaid_seats))
    for prefix, row in zip(("e1", "e2"), outbox_rows(events), strict=True):
        params.update({f"{prefix}_{column}": value for column, value in row.items()})
    try:
        taken_row = await uow.commit_statement(
            repo.one_statement_hold(repo.UNPAID_CAP_GUARD if actor is not None else None), params
        )
    except StatementRefused:
        # The class had room, its cabin did not; the statement rolled back.
        raise SoldOut(
            f"the cabin of booking class {seg.booking_class} has fewer than {party.seats} seats left",
            flight_id=str(seg.flight_id),
        ) from None
    if taken_row is None:  # nothing taken, nothing written: say why
        if actor is not None:
            await _check_unpaid_cap(uow, actor, party.seats)
        await inventory.explain_refusal(
            uow, flight_id=seg.flight_id, booking_class=seg.booking_class, seats=party.seats, now=now
        )
    assert taken_row is not None  # explain_refusal always raises
    taken = inventory.taken_from_row(
        taken_row, flight_id=seg.flight_id, booking_class=seg.booking_class, seats=party.seats
    )
    total = party.price(taken.fare_amount)
    if taken_row["total"] != total:  # pragma: no cover - the SQL price must be PartySize.price
        raise RuntimeError(f"hold {order_id} priced {taken_row['total']} in SQL, {total} by PartySize.price")
    return HeldOrder(
        id=order_id,
        party=party,
        total_amount=total,
        currency=taken.currency,
        expires_at=expires_at,
        created_at=now,
        segments=(taken,),
    )


async def release_hold(cmd: ReleaseHold, deps: BookingDeps) -> None:
    """Give a hold's seats back at once instead of waiting for it to expire."""
    async with deps.uow() as uow:
        order = await repo.lock_order(uow.conn, cmd.order_id, cmd.actor)
        require_status(order.status, {OrderStatus.HELD}, action="release")
        segments = await repo.load_segments(uow.conn, cmd.order_id)
        await repo.set_status(
            uow.conn,
            cmd.order_id,
            expected=[OrderStatus.HELD],
            status=OrderStatus.CANCELLED,
            cancelled_at=deps.clock.now(),
        )
        await inventory.release_held(uow.conn, segments)
        uow.emit(
            Event(
                type="hold.released",
                aggregate_id=str(cmd.order_id),
                tenant_id=order.tenant,
                data={"order_id": str(cmd.order_id), "record_locator": order.record_locator, "was": order.status},
            ),
            _inventory_changed([s.flight_id for s in segments], "hold_released", cmd.order_id),
        )
        await uow.commit()


async def confirm_order(cmd: ConfirmOrder, deps: BookingDeps) -> str:
    """Name the passengers of a live hold; returns the new record locator."""
    now = deps.clock.now()
    async with deps.uow() as uow:
        order = await repo.lock_order(uow.conn, cmd.order_id, cmd.actor)
        require_status(order.status, {OrderStatus.HELD}, action="confirm")
        if order.expires_at <= now:
            raise HoldExpired("the hold expired; hold the seats again")
        segments = await repo.load_segments(uow.conn, cmd.order_id)
        check_passengers(
            order.party,
            list(cmd.passengers),
            today=now.date(),
            first_flight=segments[0].departure_date,
            last_flight=segments[-1].departure_date,
        )
        locator = await repo.assign_record_locator(uow.conn, cmd.order_id)
        await repo.set_status(
            uow.conn,
            cmd.order_id,
            expected=[OrderStatus.HELD],
            status=OrderStatus.CONFIRMED,
            contact_email=cmd.contact_email,
            contact_phone=cmd.contact_phone,
            confirmed_at=now,
        )
        await uow.conn.execute(
            sa.insert(passengers),
            [
                {
                    "id": uuid7(),
                    "order_id": cmd.order_id,
                    "position": i,
                    "type": p.type,
                    "given_name": p.given_name,
                    "family_name": p.family_name,
                    "family_name_key": name_key(p.family_name),
                    "date_of_birth": p.date_of_birth,
                }
                for i, p in enumerate(cmd.passengers, start=1)
            ],
        )
        uow.emit(
            Event(
                type="order.confirmed",
                aggregate_id=str(cmd.order_id),
                tenant_id=order.tenant,
                data={
                    "order_id": str(cmd.order_id),
                    "record_locator": locator,
                    "ticketing_deadline": order.expires_at.isoformat(),
                    "passengers": len(cmd.passengers),
                },
            )
        )
        await uow.commit()
    return locator


async def _captured_payment(conn: AsyncConnection, order_id: uuid.UUID) -> sa.Row[Any] | None:
    """The order's captured payment, if it has one (at most one: see ``uq_payments_one_live_per_order``)."""
    return (
        await conn.execute(sa.select(payments).where(payments.c.order_id == order_id, payments.c.status == "captured"))
    ).first()


async def pay_order(cmd: PayOrder, deps: BookingDeps) -> None:
    """Authorise and capture the order's total; the ticketing consumer then issues the e-tickets.

    Three short steps, none holding a lock while the provider is called: record a pending
    payment (the unique index makes a second concurrent payment impossible), call the provider,
    then record the capture with its ``payment.captured`` event in one transaction.
    ``TicketIssuer`` turns that event into one e-ticket per passenger.
    """
    now = deps.clock.now()
    payment_id = uuid7()
    async with deps.uow() as uow:
        order = await repo.lock_order(uow.conn, cmd.order_id, cmd.actor)
        if order.status == OrderStatus.TICKETED:
            raise AlreadyPaid("the order is already paid and ticketed")
        if order.status == OrderStatus.HELD:
            raise InvalidState("name the passengers (confirm the order) before paying", current_status=order.status)
        require_status(order.status, {OrderStatus.CONFIRMED}, action="pay")
        if await _captured_payment(uow.conn, cmd.order_id) is not None:
            raise AlreadyPaid("the order is paid; its e-tickets are being issued")
        if order.expires_at <= now:
            raise HoldExpired("the ticketing deadline passed; hold the seats again")
        # A payment whose process died mid-call would otherwise block every later attempt.
        await uow.conn.execute(
            sa.update(payments)
            .where(
                payments.c.order_id == cmd.order_id,
                payments.c.status == "pending",
                payments.c.created_at <= now - STALE_PAYMENT,
            )
            .values(status="failed", decline_code="abandoned", updated_at=now)
        )
        try:
            async with uow.conn.begin_nested():
                await uow.conn.execute(
                    sa.insert(payments).values(
                        id=payment_id,
                        order_id=cmd.order_id,
                        amount=order.total_amount,
                        currency=order.currency,
                        status="pending",
                        provider=deps.payments.name,
                        card_last4=cmd.card.last4,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except sa.exc.IntegrityError as exc:
            raise PaymentInProgress("another payment for this order is in progress") from exc
        await uow.commit()

    auth = await deps.payments.authorize(
        amount=order.total_amount,
        currency=order.currency,
        card=cmd.card,
        idempotency_key=f"auth-{payment_id}",
    )
    if auth.outcome is Outcome.APPROVED and auth.reference:
        capture = await deps.payments.capture(
            reference=auth.reference,
            amount=order.total_amount,
            idempotency_key=f"capture-{payment_id}",
        )
    else:
        capture = auth
    if capture.outcome is not Outcome.APPROVED or capture.reference is None:
        declined = capture.outcome is Outcome.DECLINED
        async with deps.uow() as uow:
            await uow.conn.execute(
                sa.update(payments)
                .where(payments.c.id == payment_id)
                .values(
                    status="declined" if declined else "failed",
                    decline_code=capture.decline_code,
                    updated_at=deps.clock.now(),
                )
            )
            uow.emit(
                Event(
                    type="payment.declined" if declined else "payment.failed",
                    aggregate_id=str(cmd.order_id),
                    tenant_id=order.tenant,
                    data={
                        "order_id": str(cmd.order_id),
                        "payment_id": str(payment_id),
                        "decline_code": capture.decline_code,
                    },
                )
            )
            await uow.commit()
        if declined:
            raise PaymentDeclined(
                "the card was declined; the seats stay held until the ticketing deadline",
                decline_code=capture.decline_code,
                ticketing_deadline=order.expires_at.isoformat(),
            )
        raise PaymentProviderError("the payment provider failed; nothing was charged, retry later")

    await _record_capture(cmd.order_id, payment_id, capture.reference, order.total_amount, order.currency, deps)


async def _record_capture(
    order_id: uuid.UUID, payment_id: uuid.UUID, reference: str, amount: int, currency: str, deps: BookingDeps
) -> None:
    """Record the captured money and announce it; the ticketing consumer issues the tickets.

    The capture and its ``payment.captured`` event commit together, so the tickets follow at
    least once, and the order (confirmed, with a captured payment) is shielded from the sweeper.
    """
    now = deps.clock.now()
    async with deps.uow() as uow:
        order = await repo.lock_order(uow.conn, order_id)
        await uow.conn.execute(
            sa.update(payments)
            .where(payments.c.id == payment_id)
            .values(status="captured", provider_reference=reference, updated_at=now)
        )
        uow.emit(
            Event(
                type="payment.captured",
                aggregate_id=str(order_id),
                tenant_id=order.tenant,
                data={
                    "order_id": str(order_id),
                    "payment_id": str(payment_id),
                    "amount": amount,
                    "currency": currency,
                },
            )
        )
        if order.status == OrderStatus.CONFIRMED:
            await uow.commit()
            return
    # Only when the provider call outlived STALE_PAYMENT and the order expired meanwhile: nobody
    # will ticket it, so the money goes straight back.
    result = await deps.payments.void(reference=reference, idempotency_key=f"void-{payment_id}")
    async with deps.uow() as uow:
        await uow.conn.execute(
            sa.update(payments)
            .where(payments.c.id == payment_id)
            .values(
                status="voided" if result.outcome is Outcome.APPROVED else "failed",
                provider_reference=reference,
                decline_code=None if result.outcome is Outcome.APPROVED else "void_failed",
                updated_at=deps.clock.now(),
            )
        )
        await uow.commit()
    raise InvalidState(f"order became {order.status} while paying; the payment was voided", current_status=order.status)


class TicketIssuer:
    """Event consumer: issues the e-tickets of an order whose payment was captured.

    Idempotent twice over: the inbox drops a redelivered event, and only a ``confirmed`` order
    whose payment is still captured is ticketed (a second ``payment.captured`` finds it
    ``ticketed``; an order cancelled and refunded before this ran stays cancelled).
    """

    name = "booking.ticketing"
    event_types = frozenset({"payment.captured"})

    def __init__(self, deps: BookingDeps) -> None:
        self.deps = deps

    async def __call__(self, event: Event, uow: UnitOfWork) -> None:
        await issue_tickets(
            uuid.UUID(event.data["order_id"]), uuid.UUID(event.data["payment_id"]), uow, self.deps, cause=event
        )


async def issue_tickets(
    order_id: uuid.UUID, payment_id: uuid.UUID, uow: UnitOfWork, deps: BookingDeps, *, cause: Event | None = None
) -> bool:
    """Issue one e-ticket per passenger in ``uow``'s transaction; False when there is nothing to do."""
    now = deps.clock.now()
    order = await repo.lock_order(uow.conn, order_id)
    if order.status != OrderStatus.CONFIRMED:
        return False  # already ticketed (a redelivery) or cancelled and refunded meanwhile
    captured = await uow.conn.scalar(
        sa.select(payments.c.id).where(payments.c.id == payment_id, payments.c.status == "captured")
    )
    if captured is None:
        return False
    segments = await repo.load_segments(uow.conn, order_id)
    people = await repo.passenger_rows(uow.conn, order_id)
    await repo.set_status(
        uow.conn,
        order_id,
        expected=[OrderStatus.CONFIRMED],
        status=OrderStatus.TICKETED,
        ticketed_at=now,
    )
    await repo.announce_ticketed(uow.conn, order_id)
    await inventory.sell_held(uow.conn, segments)
    serials = await repo.allocate_ticket_serials(uow.conn, deps.accounting_code, len(people))
    issued: list[dict[str, Any]] = []
    for person, serial in zip(people, serials, strict=True):
        number = f"{deps.accounting_code}{serial:010d}"
        amount = sum(order.party.fare_for(PassengerType(person.type), s.fare_amount) for s in segments)
        issued.append(
            {
                "number": number,
                "order_id": order_id,
                "passenger_id": person.id,
                "status": "issued",
                "issued_at": now,
                "amount": amount,
                "currency": order.currency,
            }
        )
    await uow.conn.execute(sa.insert(tickets), issued)
    await uow.conn.execute(
        sa.insert(ticket_coupons),
        [
            {
                "ticket_number": t["number"],
                "coupon_no": s.segment_no,
                "flight_id": s.flight_id,
                "booking_class": s.booking_class,
            }
            for t in issued
            for s in segments
        ],
    )
    # Follow-up events keep the request's correlation id and name the event that caused them.
    lineage: dict[str, Any] = (
        {"correlation_id": cause.correlation_id, "causation_id": str(cause.id), "tenant_id": order.tenant}
        if cause is not None
        else {"tenant_id": order.tenant}
    )
    ticketed = Event(
        type="order.ticketed",
        aggregate_id=str(order_id),
        data={
            "order_id": str(order_id),
            "record_locator": order.record_locator,
            "contact_email": order.contact_email,
            "total": {"amount": order.total_amount, "currency": order.currency},
            "passengers": [
                {
                    "name": f"{p.family_name}/{p.given_name}".upper(),
                    "type": p.type,
                    "ticket_number": t["number"],
                }
                for p, t in zip(people, issued, strict=True)
            ],
            "segments": [
                {
                    "designator": s.designator,
                    "origin": s.origin,
                    "destination": s.destination,
                    "departure_at": s.departure_at.isoformat(),
                    "arrival_at": s.arrival_at.isoformat(),
                    "booking_class": s.booking_class,
                    "cabin": s.cabin,
                }
                for s in segments
            ],
        },
        **lineage,
    )
    changed = _inventory_changed([s.flight_id for s in segments], "ticketed", order_id)
    if cause is not None:
        changed = dataclasses.replace(changed, **lineage)
    uow.emit(ticketed, changed)
    return True


async def assign_seats(cmd: AssignSeats, deps: BookingDeps) -> None:
    """Seat passengers; a passenger who already has a seat on that flight moves to the new one."""
    if not cmd.seats:
        raise InvalidRequest("no seats requested")
    now = deps.clock.now()
    async with deps.uow() as uow:
        order = await repo.lock_order(uow.conn, cmd.order_id, cmd.actor)
        require_status(order.status, {OrderStatus.CONFIRMED, OrderStatus.TICKETED}, action="assign seats on")
        segments = {s.flight_id: s for s in await repo.load_segments(uow.conn, cmd.order_id)}
        people = {p.id: p for p in await repo.passenger_rows(uow.conn, cmd.order_id)}
        wanted: set[tuple[uuid.UUID, uuid.UUID]] = set()
        seat_maps: dict[str, inventory.SeatMap] = {}
        for req in cmd.seats:
            seg = segments.get(req.flight_id)
            person = people.get(req.passenger_id)
            if seg is None:
                raise InvalidRequest(f"flight {req.flight_id} is not part of this order")
            if person is None:
                raise InvalidRequest(f"passenger {req.passenger_id} is not part of this order")
            if person.type == PassengerType.INFANT:
                raise InvalidRequest("an infant travels on an adult's lap and takes no seat")
            if (req.passenger_id, req.flight_id) in wanted:
                raise InvalidRequest("one seat per passenger and flight")
            wanted.add((req.passenger_id, req.flight_id))
            if seg.aircraft_code not in seat_maps:
                seat_maps[seg.aircraft_code] = await inventory.get_seat_map(uow.conn, seg.aircraft_code)
            seat = seat_maps[seg.aircraft_code].seat(req.seat_number)
            if seat is None:
                raise InvalidRequest(f"{seg.designator} has no seat {req.seat_number}")
            if seat.cabin != seg.cabin:
                raise SeatUnavailable(f"seat {req.seat_number} is not in the booked cabin ({seg.cabin})")
        for req in cmd.seats:
            await uow.conn.execute(
                sa.delete(seat_assignments).where(
                    seat_assignments.c.flight_id == req.flight_id,
                    seat_assignments.c.passenger_id == req.passenger_id,
                )
            )
        for req in cmd.seats:
            try:
                async with uow.conn.begin_nested():
                    await uow.conn.execute(
                        sa.insert(seat_assignments).values(
                            flight_id=req.flight_id,
                            seat_number=req.seat_number,
                            passenger_id=req.passenger_id,
                            order_id=cmd.order_id,
                            assigned_at=now,
                        )
                    )
            except sa.exc.IntegrityError as exc:
                raise SeatUnavailable(f"seat {req.seat_number} is taken", seat=req.seat_number) from exc
        uow.emit(
            Event(
                type="seat.assigned",
                aggregate_id=str(cmd.order_id),
                tenant_id=order.tenant,
                data={
                    "order_id": str(cmd.order_id),
                    "seats": [
                        {
                            "passenger_id": str(r.passenger_id),
                            "flight_id": str(r.flight_id),
                            "seat": r.seat_number,
                        }
                        for r in cmd.seats
                    ],
                },
            )
        )
        await uow.commit()


async def cancel_order(cmd: CancelOrder, deps: BookingDeps) -> None:
    """Cancel: before payment release the seats; once paid, void (day of payment) or refund, then release.

    A paid order is one that is ticketed, or confirmed with a captured payment whose tickets the
    ticketing consumer has not issued yet; both get their money back.
    """
    async with deps.uow() as uow:
        order = await repo.get_order_row(uow.conn, cmd.order_id, cmd.actor)
        payment = await _captured_payment(uow.conn, cmd.order_id)
    require_status(order.status, {*LIVE, OrderStatus.TICKETED}, action="cancel")
    if payment is None:
        if order.status == OrderStatus.TICKETED:  # pragma: no cover - a ticketed order always has its payment
            raise InvalidState("the order has no captured payment to refund")
        await _cancel_unticketed(cmd.order_id, deps, cmd.actor)
        return

    # Paid: settle the money first (idempotent at the provider), then change our state.
    now = deps.clock.now()
    paid_on = order.ticketed_at or payment.updated_at
    same_day = paid_on.date() == now.date()
    kind = "void" if same_day else "refund"
    if same_day:
        result = await deps.payments.void(reference=payment.provider_reference, idempotency_key=f"void-{payment.id}")
    else:
        result = await deps.payments.refund(
            reference=payment.provider_reference,
            amount=payment.amount,
            idempotency_key=f"refund-{payment.id}",
        )
    if result.outcome is not Outcome.APPROVED:
        raise PaymentProviderError(f"the provider could not {kind} the payment; the order is unchanged")

    async with deps.uow() as uow:
        # The ticketing consumer may have issued the tickets while the provider was called.
        current = await repo.lock_order(uow.conn, cmd.order_id)
        was = current.status
        if not await repo.set_status(
            uow.conn,
            cmd.order_id,
            expected=[OrderStatus.CONFIRMED, OrderStatus.TICKETED],
            status=OrderStatus.CANCELLED,
            cancelled_at=now,
        ):
            raise InvalidState("the order was cancelled meanwhile")
        segments = await repo.load_segments(uow.conn, cmd.order_id)
        if was == OrderStatus.TICKETED:
            await inventory.release_sold(uow.conn, segments)
            await uow.conn.execute(
                sa.update(tickets)
                .where(tickets.c.order_id == cmd.order_id)
                .values(status="voided" if same_day else "refunded")
            )
        else:
            await inventory.release_held(uow.conn, segments)
        await repo.free_seats(uow.conn, cmd.order_id)
        await uow.conn.execute(
            sa.update(payments)
            .where(payments.c.id == payment.id)
            .values(status="voided" if same_day else "refunded", updated_at=now)
        )
        await uow.conn.execute(
            sa.insert(refunds).values(
                id=uuid7(),
                payment_id=payment.id,
                kind=kind,
                amount=payment.amount,
                currency=payment.currency,
                provider_reference=result.reference,
                created_at=now,
            )
        )
        uow.emit(
            Event(
                type="payment.refunded",
                aggregate_id=str(cmd.order_id),
                tenant_id=order.tenant,
                data={
                    "order_id": str(cmd.order_id),
                    "payment_id": str(payment.id),
                    "kind": kind,
                    "amount": payment.amount,
                    "currency": payment.currency,
                },
            ),
            Event(
                type="order.cancelled",
                aggregate_id=str(cmd.order_id),
                tenant_id=order.tenant,
                data={
                    "order_id": str(cmd.order_id),
                    "record_locator": order.record_locator,
                    "was": str(was),
                    "settlement": kind,
                },
            ),
            _inventory_changed([s.flight_id for s in segments], "cancelled", cmd.order_id),
        )
        await uow.commit()


async def _cancel_unticketed(order_id: uuid.UUID, deps: BookingDeps, actor: Principal | None) -> None:
    async with deps.uow() as uow:
        order = await repo.lock_order(uow.conn, order_id, actor)
        require_status(order.status, set(LIVE), action="cancel")
        pending = await uow.conn.scalar(
            sa.select(payments.c.id).where(payments.c.order_id == order_id, payments.c.status == "pending")
        )
        if pending is not None:
            raise PaymentInProgress("a payment for this order is in progress; retry when it has finished")
        if await _captured_payment(uow.conn, order_id) is not None:
            raise PaymentInProgress("the payment has just been captured; retry to cancel with a refund")
        segments = await repo.load_segments(uow.conn, order_id)
        await repo.set_status(
            uow.conn,
            order_id,
            expected=list(LIVE),
            status=OrderStatus.CANCELLED,
            cancelled_at=deps.clock.now(),
        )
        await inventory.release_held(uow.conn, segments)
        await repo.free_seats(uow.conn, order_id)
        event_type = "hold.released" if order.status == OrderStatus.HELD else "order.cancelled"
        uow.emit(
            Event(
                type=event_type,
                aggregate_id=str(order_id),
                tenant_id=order.tenant,
                data={
                    "order_id": str(order_id),
                    "record_locator": order.record_locator,
                    "was": order.status,
                },
            ),
            _inventory_changed([s.flight_id for s in segments], "cancelled", order_id),
        )
        await uow.commit()


def _shielded_by_payment(now: datetime) -> sa.ColumnElement[bool]:
    """The order has money on its way: a captured payment (tickets follow) or a payment in flight."""
    p = payments.c
    return (
        sa.exists()
        .where(p.order_id == orders.c.id)
        .where((p.status == "captured") | ((p.status == "pending") & (p.created_at > now - STALE_PAYMENT)))
    )


async def expire_overdue(deps: BookingDeps, *, limit: int = 500) -> int:
    """Expire holds and unpaid orders past their deadline and give their seats back.

    Never an order whose payment was captured (its tickets are on their way, however late the
    ticketing consumer is) or is being taken. Safe to run in several processes at once: each
    order is taken with ``SKIP LOCKED`` and checked again under its lock, so two sweepers never
    expire one order twice and never wait for each other.
    """
    now = deps.clock.now()
    async with deps.uow() as uow:
        due = list(
            await uow.conn.scalars(
                sa.select(orders.c.id)
                .where(orders.c.status.in_(list(LIVE)), orders.c.expires_at <= now, ~_shielded_by_payment(now))
                .order_by(orders.c.expires_at)
                .limit(limit)
            )
        )
    expired = 0
    for order_id in due:
        if await _expire_one(order_id, now, deps):
            expired += 1
    return expired


async def _expire_one(order_id: uuid.UUID, now: datetime, deps: BookingDeps) -> bool:
    async with deps.uow() as uow:
        order = await repo.try_lock_order(uow.conn, order_id)
        if order is None or order.status not in LIVE or order.expires_at > now:
            return False  # another sweeper (or a request) has it, or it moved on
        shielded = await uow.conn.scalar(sa.select(_shielded_by_payment(now)).where(orders.c.id == order_id))
        if shielded:
            return False  # paid or being paid; it will ticket or fail, then we look again
        segments = await repo.load_segments(uow.conn, order_id)
        await repo.set_status(uow.conn, order_id, expected=list(LIVE), status=OrderStatus.EXPIRED)
        await inventory.release_held(uow.conn, segments)
        await repo.free_seats(uow.conn, order_id)
        uow.emit(
            Event(
                type="hold.expired" if order.status == OrderStatus.HELD else "order.expired",
                aggregate_id=str(order_id),
                tenant_id=order.tenant,
                data={"order_id": str(order_id), "record_locator": order.record_locator},
            ),
            _inventory_changed([s.flight_id for s in segments], "expired", order_id),
        )
        await uow.commit()
    return True

"""Tables owned by the booking context: orders (holds and PNRs), passengers, tickets, seats."""

from __future__ import annotations

import sqlalchemy as sa

from skybook.platform.db import UTCDateTime, metadata

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    # Who owns it: the tenant and the principal (user or API key) that made the hold.
    sa.Column("tenant_id", sa.Uuid, index=True),
    sa.Column("created_by", sa.Uuid),
    sa.Column("record_locator", sa.String(6), unique=True),
    sa.Column("adults", sa.SmallInteger, nullable=False),
    sa.Column("children", sa.SmallInteger, nullable=False),
    sa.Column("infants", sa.SmallInteger, nullable=False),
    sa.Column("total_amount", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("contact_email", sa.String(254)),
    sa.Column("contact_phone", sa.String(32)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("confirmed_at", UTCDateTime),
    sa.Column("ticketed_at", UTCDateTime),
    sa.Column("cancelled_at", UTCDateTime),
    sa.CheckConstraint("status IN ('held', 'confirmed', 'ticketed', 'cancelled', 'expired')", name="known_status"),
)
# The sweeper scans live orders by deadline.
sa.Index(
    "ix_orders_live_expiry",
    orders.c.expires_at,
    sqlite_where=orders.c.status.in_(["held", "confirmed"]),
    postgresql_where=orders.c.status.in_(["held", "confirmed"]),
)
sa.Index("ix_orders_created_at", orders.c.created_at)
# The seat-hoarding cap counts a principal's unpaid seats.
sa.Index(
    "ix_orders_live_by_creator",
    orders.c.created_by,
    sqlite_where=orders.c.status.in_(["held", "confirmed"]),
    postgresql_where=orders.c.status.in_(["held", "confirmed"]),
)

order_segments = sa.Table(
    "order_segments",
    metadata,
    sa.Column("order_id", sa.Uuid, sa.ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("segment_no", sa.SmallInteger, primary_key=True),
    sa.Column("flight_id", sa.Uuid, sa.ForeignKey("flights.id"), nullable=False, index=True),
    sa.Column("booking_class", sa.String(1), nullable=False),
    sa.Column("booking_class_id", sa.Uuid, sa.ForeignKey("booking_classes.id"), nullable=False),
    sa.Column("cabin", sa.String(1), nullable=False),
    sa.Column("cabin_id", sa.Uuid, sa.ForeignKey("flight_cabins.id"), nullable=False),
    sa.Column("seats", sa.SmallInteger, nullable=False),
    sa.Column("fare_amount", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
)

passengers = sa.Table(
    "passengers",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column(
        "order_id",
        sa.Uuid,
        sa.ForeignKey("orders.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("position", sa.SmallInteger, nullable=False),
    sa.Column("type", sa.String(3), nullable=False),
    sa.Column("given_name", sa.String(60), nullable=False),
    sa.Column("family_name", sa.String(60), nullable=False),
    # Upper-cased, accent-free family name for "manage my booking" look-ups.
    sa.Column("family_name_key", sa.String(60), nullable=False),
    sa.Column("date_of_birth", sa.Date, nullable=False),
    sa.UniqueConstraint("order_id", "position", name="uq_passengers_order_position"),
    sa.CheckConstraint("type IN ('ADT', 'CHD', 'INF')", name="known_type"),
)

tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("number", sa.String(13), primary_key=True),
    sa.Column("order_id", sa.Uuid, sa.ForeignKey("orders.id"), nullable=False, index=True),
    sa.Column("passenger_id", sa.Uuid, sa.ForeignKey("passengers.id"), nullable=False, unique=True),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("issued_at", UTCDateTime, nullable=False),
    sa.Column("amount", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.CheckConstraint("status IN ('issued', 'voided', 'refunded')", name="known_status"),
)

ticket_coupons = sa.Table(
    "ticket_coupons",
    metadata,
    sa.Column("ticket_number", sa.String(13), sa.ForeignKey("tickets.number"), primary_key=True),
    sa.Column("coupon_no", sa.SmallInteger, primary_key=True),
    sa.Column("flight_id", sa.Uuid, sa.ForeignKey("flights.id"), nullable=False),
    sa.Column("booking_class", sa.String(1), nullable=False),
)

ticket_serials = sa.Table(
    "ticket_serials",
    metadata,
    sa.Column("accounting_code", sa.String(3), primary_key=True),
    sa.Column("last_serial", sa.BigInteger, nullable=False),
)

seat_assignments = sa.Table(
    "seat_assignments",
    metadata,
    sa.Column("flight_id", sa.Uuid, sa.ForeignKey("flights.id"), primary_key=True),
    # Two passengers can never share a seat: the primary key is (flight, seat).
    sa.Column("seat_number", sa.String(4), primary_key=True),
    sa.Column("passenger_id", sa.Uuid, sa.ForeignKey("passengers.id", ondelete="CASCADE"), nullable=False),
    sa.Column(
        "order_id",
        sa.Uuid,
        sa.ForeignKey("orders.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("assigned_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("flight_id", "passenger_id", name="uq_seat_assignments_one_seat_per_passenger"),
)

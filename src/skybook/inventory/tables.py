"""Tables owned by the inventory context."""

from __future__ import annotations

import sqlalchemy as sa

from skybook.platform.db import JSONType, UTCDateTime, metadata

airports = sa.Table(
    "airports",
    metadata,
    sa.Column("iata", sa.String(3), primary_key=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("city", sa.String(80), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),
    sa.Column("time_zone", sa.String(64), nullable=False),
)

aircraft_types = sa.Table(
    "aircraft_types",
    metadata,
    sa.Column("code", sa.String(8), primary_key=True),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("seat_map", JSONType, nullable=False),
)

flights = sa.Table(
    "flights",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("carrier", sa.String(3), nullable=False),
    sa.Column("flight_number", sa.String(4), nullable=False),
    sa.Column("departure_date", sa.Date, nullable=False),
    sa.Column("origin", sa.String(3), sa.ForeignKey("airports.iata"), nullable=False),
    sa.Column("destination", sa.String(3), sa.ForeignKey("airports.iata"), nullable=False),
    sa.Column("departure_at", UTCDateTime, nullable=False),
    sa.Column("arrival_at", UTCDateTime, nullable=False),
    sa.Column("aircraft_code", sa.String(8), sa.ForeignKey("aircraft_types.code"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="scheduled"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("carrier", "flight_number", "departure_date", name="uq_flights_designator_date"),
    sa.CheckConstraint("origin <> destination", name="distinct_airports"),
)
sa.Index("ix_flights_route_date", flights.c.origin, flights.c.destination, flights.c.departure_date)

flight_cabins = sa.Table(
    "flight_cabins",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("flight_id", sa.Uuid, sa.ForeignKey("flights.id", ondelete="CASCADE"), nullable=False),
    sa.Column("cabin_code", sa.String(1), nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.Column("overbooking_limit", sa.Integer, nullable=False, server_default="0"),
    sa.Column("held", sa.Integer, nullable=False, server_default="0"),
    sa.Column("sold", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("flight_id", "cabin_code", name="uq_flight_cabins_flight_cabin"),
    # The last line of defence against overselling: even a buggy writer cannot commit it.
    sa.CheckConstraint("held >= 0 AND sold >= 0", name="counts_not_negative"),
    sa.CheckConstraint("held + sold <= capacity + overbooking_limit", name="not_oversold"),
    sa.CheckConstraint("capacity >= 0 AND overbooking_limit >= 0", name="capacity_not_negative"),
)

booking_classes = sa.Table(
    "booking_classes",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("flight_id", sa.Uuid, sa.ForeignKey("flights.id", ondelete="CASCADE"), nullable=False),
    sa.Column("cabin_id", sa.Uuid, sa.ForeignKey("flight_cabins.id", ondelete="CASCADE"), nullable=False),
    sa.Column("code", sa.String(1), nullable=False),
    sa.Column("fare_amount", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("seat_limit", sa.Integer, nullable=False),
    sa.Column("held", sa.Integer, nullable=False, server_default="0"),
    sa.Column("sold", sa.Integer, nullable=False, server_default="0"),
    sa.Column("is_open", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.UniqueConstraint("flight_id", "code", name="uq_booking_classes_flight_code"),
    sa.CheckConstraint("held >= 0 AND sold >= 0", name="counts_not_negative"),
    sa.CheckConstraint("fare_amount >= 0 AND seat_limit >= 0", name="fare_not_negative"),
)

"""Tables owned by the payments context."""

from __future__ import annotations

import sqlalchemy as sa

from skybook.platform.db import UTCDateTime, metadata

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("order_id", sa.Uuid, sa.ForeignKey("orders.id"), nullable=False, index=True),
    sa.Column("amount", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("provider_reference", sa.String(64)),
    sa.Column("card_last4", sa.String(4), nullable=False),
    sa.Column("decline_code", sa.String(32)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint(
        "status IN ('pending', 'captured', 'declined', 'failed', 'voided', 'refunded')",
        name="known_status",
    ),
)
# At most one payment in flight or captured per order: paying twice is impossible by construction.
sa.Index(
    "uq_payments_one_live_per_order",
    payments.c.order_id,
    unique=True,
    sqlite_where=payments.c.status.in_(["pending", "captured"]),
    postgresql_where=payments.c.status.in_(["pending", "captured"]),
)

refunds = sa.Table(
    "refunds",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("payment_id", sa.Uuid, sa.ForeignKey("payments.id"), nullable=False, unique=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("amount", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("provider_reference", sa.String(64)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("kind IN ('void', 'refund')", name="known_kind"),
)

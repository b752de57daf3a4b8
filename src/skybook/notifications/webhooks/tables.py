"""Tables of tenant webhooks: endpoints, deliveries (the log a tenant reads) and their attempts."""

from __future__ import annotations

import sqlalchemy as sa

from skybook.platform.db import JSONType, UTCDateTime, metadata

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("description", sa.String(200), nullable=False, server_default=""),
    sa.Column("event_types", JSONType, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    # Fernet tokens: the platform must sign with the secret, so it is encrypted, not hashed.
    sa.Column("secret_ciphertext", sa.Text, nullable=False),
    sa.Column("previous_secret_ciphertext", sa.Text),
    sa.Column("previous_secret_expires_at", UTCDateTime),
    sa.Column("created_by", sa.Uuid),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column(
        "endpoint_id", sa.Uuid, sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("tenant_id", sa.Uuid, nullable=False),
    sa.Column("event_id", sa.Uuid, nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    # pending -> succeeded | failed; a replay is a new delivery pointing at the one it repeats.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("last_attempt_at", UTCDateTime),
    sa.Column("response_status", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("replay_of", sa.Uuid),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime),
)
sa.Index(
    "ix_webhook_deliveries_due",
    webhook_deliveries.c.next_attempt_at,
    sqlite_where=webhook_deliveries.c.status == "pending",
    postgresql_where=webhook_deliveries.c.status == "pending",
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("delivery_id", sa.Uuid, sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("attempted_at", UTCDateTime, nullable=False),
    sa.Column("response_status", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("duration_ms", sa.Integer, nullable=False),
)

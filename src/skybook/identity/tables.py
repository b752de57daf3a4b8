"""Tables owned by the identity context: tenants, plans, users, tokens, API keys, audit log."""

from __future__ import annotations

import sqlalchemy as sa

from skybook.platform.db import BigIntPK, JSONType, UTCDateTime, metadata

plans = sa.Table(
    "plans",
    metadata,
    sa.Column("code", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("requests_per_minute", sa.Integer, nullable=False),
    sa.Column("tenant_requests_per_minute", sa.Integer, nullable=False),
    sa.Column("max_unpaid_seats", sa.Integer, nullable=False),
)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(120), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("plan_code", sa.String(32), sa.ForeignKey("plans.code"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("kind IN ('operator', 'agency', 'direct')", name="known_kind"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255)),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    # Bumped by logout-everywhere and password change: access tokens carry it and die with it.
    sa.Column("session_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("invitation_hash", sa.String(64), unique=True),
    sa.Column("invitation_expires_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint(
        "role IN ('platform_admin', 'airline_staff', 'tenant_admin', 'agent', 'traveller')", name="known_role"
    ),
    sa.CheckConstraint("status IN ('active', 'invited', 'disabled')", name="known_status"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("family_id", sa.Uuid, nullable=False, index=True),
    sa.Column("user_id", sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("issued_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("scopes", JSONType, nullable=False),
    sa.Column("created_by", sa.Uuid, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.Uuid, index=True),
    sa.Column("actor_id", sa.Uuid),
    sa.Column("action", sa.String(48), nullable=False),
    sa.Column("target", sa.String(120)),
    sa.Column("ip", sa.String(45)),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("details", JSONType, nullable=False),
)

# One row whose version moves (by trigger, migration 0007) whenever anything authentication reads
# about a user, API key, tenant or plan changes; API processes poll it to keep principals cached.
identity_version = sa.Table(
    "identity_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)

"""identity version: one counter that every change to who-may-do-what moves, by trigger

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 02:40:00

API processes keep principals in memory and poll this one row (``SELECT version``) a few times a
second instead of re-reading every principal each second; when it moved, they reload. Triggers
move it in the same transaction as the change, so no writer (the API, a CLI, an operator's SQL)
can forget to signal, and the reader sees the new version exactly when it can see the change.
Only the columns authentication reads count; ``api_keys.last_used_at`` and password hashes do not.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# (table, columns authentication reads). DELETE counts for every table.
_WATCHED = (
    ("users", ("tenant_id", "role", "status", "session_version", "email")),
    ("api_keys", ("tenant_id", "scopes", "revoked_at")),
    ("tenants", ("plan_code",)),
    ("plans", ("requests_per_minute", "tenant_requests_per_minute", "max_unpaid_seats")),
)


def upgrade() -> None:
    op.create_table(
        "identity_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_identity_version_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_version")),
    )
    op.execute("INSERT INTO identity_version (id, version) VALUES (1, 1)")
    if op.get_bind().dialect.name == "postgresql":
        # The row lock taken by the UPDATE orders the writers: versions commit in increasing order.
        op.execute(
            """
            CREATE FUNCTION identity_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE identity_version SET version = version + 1 WHERE id = 1;
                RETURN NULL;
            END $$
            """
        )
        for table, columns in _WATCHED:
            changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in columns)
            op.execute(
                f"CREATE TRIGGER {table}_identity_version_update AFTER UPDATE OF {', '.join(columns)} ON {table} "
                f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION identity_version_bump()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_identity_version_delete AFTER DELETE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION identity_version_bump()"
            )
        return
    bump = "UPDATE identity_version SET version = version + 1 WHERE id = 1;"
    for table, columns in _WATCHED:
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
        op.execute(
            f"CREATE TRIGGER {table}_identity_version_update AFTER UPDATE OF {', '.join(columns)} ON {table} "
            f"FOR EACH ROW WHEN {changed} BEGIN {bump} END"
        )
        op.execute(f"CREATE TRIGGER {table}_identity_version_delete AFTER DELETE ON {table} BEGIN {bump} END")


def downgrade() -> None:
    for table, _ in _WATCHED:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_identity_version_update" + _on(table))
        op.execute(f"DROP TRIGGER IF EXISTS {table}_identity_version_delete" + _on(table))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS identity_version_bump()")
    op.drop_table("identity_version")


def _on(table: str) -> str:
    return f" ON {table}" if op.get_bind().dialect.name == "postgresql" else ""
